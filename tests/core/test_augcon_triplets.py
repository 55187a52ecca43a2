"""AugCon's query scorer training data, pure part: the question/split prompts, the triplet jobs
(full vs degraded prompt per chunk) and the rows made from their completions. No engine."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import BaseModel

from condor_dagster.core.llm import Completion, SamplingParams
from condor_dagster.core.prompts import load_prompt
from condor_dagster.methods.augcon.examples import QAExample, format_examples
from condor_dagster.methods.augcon.records import AugconOrigin, ChunkRow
from condor_dagster.methods.augcon.scorer import Triplet
from condor_dagster.methods.augcon.split_rules import parse_marked_up
from condor_dagster.methods.augcon.triplets import (
    QUESTION_PROMPT,
    VAGUE_PROMPT,
    QuestionOutput,
    TripletJob,
    parse_question,
    triplet_jobs,
    triplet_rows,
    usable_triplets,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SAMPLING = SamplingParams(temperature=0.85, max_tokens=128)
# The instruction lines that tell the two English question prompts apart.
FULL_MARK = "A good question:"
VAGUE_MARK = "Write a question about the text."

EXAMPLES = [
    QAExample(
        context=f"Passage number {n} about topic {n}.",
        question=f"What is special about topic {n}?",
        answer=f"Topic {n} is special because of reason {n}.",
    )
    for n in range(1, 6)
]


def chunk(n: int, language: str = "en") -> dict[str, Any]:
    text = f"Chunk {n}: the river floods every spring because the mountain snow melts quickly."
    chunk_id = f"ck-{n:04d}"
    origin = AugconOrigin(
        document_id=f"d-{n}",
        source=f"docs/{n}.txt",
        chunk_id=chunk_id,
        node_path="",
        depth=0,
        tree_pass=0,
        context=text,
    )
    return ChunkRow(
        id=chunk_id,
        parent_id=f"d-{n}",
        method="augcon",
        partition_key="shard-0",
        language=language,
        origin=origin,
        position=0,
        text=text,
        chars=len(text),
        quota=2,
        target=3,
    ).model_dump()


def completion(
    text: str, *, parsed: BaseModel | None = None, finish: str = "stop", error: str | None = None
) -> Completion:
    return Completion(
        text=text,
        finish_reason=finish,
        prompt_tokens=100,
        completion_tokens=20,
        latency_s=0.1,
        model="test-model",
        engine="scripted",
        engine_version="0",
        seed=1,
        key="k",
        cached=False,
        parsed=parsed,
        parse_error=error,
    )


def answered(question: str) -> Completion:
    """A structured completion whose question parsed."""
    return completion(f'{{"question": "{question}"}}', parsed=QuestionOutput(question=question))


def user_text(job_request: Any) -> str:
    return job_request.messages[-1].content


# ---- prompts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["augcon/split", QUESTION_PROMPT, VAGUE_PROMPT])
@pytest.mark.parametrize("language", ["en", "zh"])
def test_prompts_render_in_both_languages_with_nothing_left_unfilled(
    name: str, language: str
) -> None:
    shown = format_examples(EXAMPLES[:3], language=language, with_answers=False)
    system, user = load_prompt(name, language).render(examples=shown, context="THE CONTEXT")
    assert "$" not in system.content + user.content
    assert "THE CONTEXT" in user.content
    assert EXAMPLES[0].question in user.content
    assert EXAMPLES[0].answer not in user.content  # examples are shown without answers
    assert '"question"' in user.content  # the JSON reply form


@pytest.mark.parametrize(("language", "marker"), [("en", "Without JSON"), ("zh", "若不支持 JSON")])
def test_split_prompts_text_form_is_what_parse_marked_up_reads(language: str, marker: str) -> None:
    user = load_prompt("augcon/split", language).user
    form = user.split(marker, 1)[1].split("\n", 1)[1]  # the lines after the fallback sentence
    parsed = parse_marked_up(form)
    assert parsed is not None
    question, (part_1, part_2) = parsed
    assert question and part_1 and part_2
    assert len({question, part_1, part_2}) == 3


def test_zh_split_labels_parse() -> None:
    reply = "问题：春天河水为什么会泛滥？\n部分1：河水每年春天泛滥。\n部分2：山上的积雪融化得很快。"
    assert parse_marked_up(reply) == (
        "春天河水为什么会泛滥？",
        ("河水每年春天泛滥。", "山上的积雪融化得很快。"),
    )


# ---- jobs ------------------------------------------------------------------------------------
def jobs_of(chunks: list[dict[str, Any]], per_type: int = 3, seed: int = 0) -> list[TripletJob]:
    return triplet_jobs(chunks, EXAMPLES, per_type=per_type, sampling=SAMPLING, seed=seed)


def test_triplet_jobs_give_per_type_jobs_per_degradation_with_the_right_prompts() -> None:
    jobs = jobs_of([chunk(n) for n in range(6)], per_type=4)
    by_type = {
        d: [j for j in jobs if j.degradation == d]
        for d in ("vague_instruction", "one_example", "both")
    }
    assert {d: len(js) for d, js in by_type.items()} == {
        "vague_instruction": 4,
        "one_example": 4,
        "both": 4,
    }
    for job in jobs:
        positive, negative = user_text(job.positive_request), user_text(job.negative_request)
        assert FULL_MARK in positive and VAGUE_MARK not in positive
        assert "[3]" in positive  # three examples
        assert job.chunk["text"] in positive and job.chunk["text"] in negative
        vague = job.degradation in ("vague_instruction", "both")
        assert (VAGUE_MARK in negative) is vague
        assert (FULL_MARK in negative) is not vague
        assert ("[3]" in negative) is (job.degradation == "vague_instruction")
        if job.degradation != "vague_instruction":
            assert "[1]" in negative and "[2]" not in negative  # one example
        # The negative's examples are the positive's (or the first of them).
        first_example = negative.split("[1]", 1)[1].split("\n\n", 1)[0]
        assert first_example in positive
        assert job.positive_request.sampling.seed != job.negative_request.sampling.seed
        assert job.positive_request.sampling.temperature == 0.85
        assert job.positive_request.schema is QuestionOutput


def test_triplet_jobs_are_deterministic_and_seed_dependent() -> None:
    chunks = [chunk(n) for n in range(20)]
    assert jobs_of(chunks) == jobs_of(chunks)
    assert jobs_of(list(reversed(chunks))) == jobs_of(chunks)  # input order does not matter
    chosen = [j.chunk["id"] for j in jobs_of(chunks)]
    assert chosen != [j.chunk["id"] for j in jobs_of(chunks, seed=1)]
    # The example rotation varies across chunks, so prompts do not all share their examples.
    shown = {user_text(j.positive_request).split("Passage:\n")[0] for j in jobs_of(chunks, 20)}
    assert len(shown) > 1


def test_triplet_jobs_cap_at_the_number_of_chunks() -> None:
    chunks = [chunk(n) for n in range(3)]
    jobs = jobs_of(chunks, per_type=500)
    assert len(jobs) == 9
    for degradation in ("vague_instruction", "one_example", "both"):
        ids = sorted(j.chunk["id"] for j in jobs if j.degradation == degradation)
        assert ids == sorted(c["id"] for c in chunks)


def test_triplet_jobs_use_chinese_prompts_for_chinese_chunks() -> None:
    jobs = jobs_of([chunk(1, language="zh-Hans")], per_type=1)
    by_type = {j.degradation: j for j in jobs}
    assert "好的问题应当" in user_text(by_type["both"].positive_request)
    assert "就这段文本写一个问题" in user_text(by_type["both"].negative_request)
    assert "问题：" in user_text(by_type["both"].positive_request)  # zh example labels


def test_triplet_jobs_need_examples() -> None:
    with pytest.raises(ValueError, match="QA example"):
        triplet_jobs([chunk(1)], [], sampling=SAMPLING)


# ---- rows ------------------------------------------------------------------------------------
def test_parse_question_reads_structured_and_text_replies() -> None:
    assert parse_question(answered(" Why does it flood? "), structured=True) == "Why does it flood?"
    assert parse_question(completion("junk", error="invalid_json"), structured=True) is None
    assert parse_question(completion("\nQuestion: Why?\nmore"), structured=False) == "Why?"
    assert parse_question(completion("问题：为什么？"), structured=False) == "为什么？"
    assert parse_question(completion('{"question": "How?"}'), structured=False) == "How?"
    assert parse_question(completion("   "), structured=False) == ""


def test_triplet_rows_map_completions_to_rows_with_drop_reasons() -> None:
    chunks = [chunk(n) for n in range(5)]
    jobs = [j for j in jobs_of(chunks, per_type=5) if j.degradation == "one_example"]
    positives = [
        answered("Why does the river flood every spring?"),
        answered("Why does the river flood every spring?"),
        answered("What melts quickly in spring?"),
        answered("When does the river flood?"),
        answered("Why does the river flood in spring?"),
    ]
    negatives = [
        answered("What happens to the river?"),  # kept
        completion('{"question": "What hap', finish="length", error="truncated"),
        completion("not json", error="invalid_json: <root>: bad"),
        answered("when does the river FLOOD? "),  # the same question, case aside
        completion('{"question": ""}', parsed=QuestionOutput(question="  ")),
    ]
    rows = triplet_rows(jobs, positives, negatives, structured=True, run_id="run-1", now=NOW)
    assert [r.drop_reason for r in rows] == [
        None,
        "truncated",
        "parse_failed",
        "same_question",
        "empty_question",
    ]
    kept = rows[0]
    assert kept.positive == "Why does the river flood every spring?"
    assert kept.negative == "What happens to the river?"
    assert kept.context == jobs[0].chunk["text"]
    assert kept.parent_id == jobs[0].chunk["id"]
    assert kept.origin.chunk_id == jobs[0].chunk["id"]
    assert (kept.origin.depth, kept.origin.node_path) == (0, "")
    assert kept.positive_lineage.prompt_name == "augcon/question/en"
    assert kept.negative_lineage.prompt_name == "augcon/question/en"  # one_example: full text
    assert kept.positive_lineage.run_id == "run-1"
    assert rows[1].negative == "" and rows[1].positive  # unusable question is ""
    again = triplet_rows(jobs, positives, negatives, structured=True, run_id="run-2", now=NOW)
    assert [r.id for r in again] == [r.id for r in rows]
    assert len({r.id for r in rows}) == len(rows)
    assert all(r.id.startswith("tq-") for r in rows)


def test_triplet_rows_in_text_mode_and_vague_lineage() -> None:
    jobs = triplet_jobs([chunk(1)], EXAMPLES, per_type=1, sampling=SAMPLING, structured=False)
    assert all(j.positive_request.schema is None for j in jobs)
    positives = [completion("Question: Why does the river flood every spring?")] * 3
    negatives = [
        completion("What is this about?"),
        completion("Flood."),  # asks nothing
        completion("Why does the river flood every spring?\n"),
    ]
    rows = triplet_rows(jobs, positives, negatives, structured=False, run_id="r", now=NOW)
    reasons = {r.degradation: r.drop_reason for r in rows}
    assert reasons == {
        "vague_instruction": None,
        "one_example": "not_a_question",
        "both": "same_question",
    }
    vague = next(r for r in rows if r.degradation == "vague_instruction")
    assert vague.positive == "Why does the river flood every spring?"
    assert vague.negative_lineage.prompt_name == "augcon/vague_question/en"


def test_usable_triplets_keep_only_rows_without_a_drop_reason() -> None:
    jobs = [j for j in jobs_of([chunk(n) for n in range(2)], per_type=2) if j.degradation == "both"]
    positives = [answered("Why does the river flood?"), answered("Why does snow melt?")]
    negatives = [answered("What is a river?"), answered("why does snow melt?")]
    rows = triplet_rows(jobs, positives, negatives, structured=True, run_id="r", now=NOW)
    triplets = usable_triplets(rows)
    assert triplets == [
        Triplet(
            context=jobs[0].chunk["text"],
            positive="Why does the river flood?",
            negative="What is a river?",
            degradation="both",
        )
    ]
