"""refine_quality, pure part: verdict mapping, outcomes, rows, the win-rate arithmetic."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest

from condor_dagster.core.llm import (
    Completion,
    LLMRequest,
    SamplingParams,
    parse_structured,
)
from condor_dagster.core.rows import rows_to_frame
from condor_dagster.methods.condor.refine_judge import (
    JudgeVerdict,
    PairToJudge,
    RefineQualityRow,
    combine,
    first_position_share,
    judge_pairs,
    judge_request,
    pair_from_refined_row,
    quality_card_lines,
    summarize,
    winner_of,
)

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def pair(n: int = 1, *, rewritten: bool = True, language: str = "en", **kw: str) -> PairToJudge:
    """A refined_answers row (the contract fields and Condor's origin) as a pair."""
    row = {
        "id": f"r-{n}",
        "parent_id": f"a-{n}",
        "question_id": f"q-{n}",
        "method": "condor",
        "partition_key": "pets.00000001",
        "language": language,
        "origin": {
            "tag_path": "Pets > Dogs",
            "task": kw.pop("task", "view"),
            "difficulty": kw.pop("difficulty", "easy"),
        },
        "question": kw.pop("question", f"Why {n}?"),
        "draft_answer": kw.pop("draft_answer", f"Draft {n}."),
        "answer": kw.pop("refined_answer", f"Refined {n}." if rewritten else f"Draft {n}."),
    }
    assert not kw, f"unknown pair fields {kw}"
    return PairToJudge(row=row, rewritten=rewritten)


def scripted(verdicts: dict[tuple[str, str], str]):
    """A generate function answering each request by (refined id, which text is in A)."""
    seen: list[LLMRequest] = []

    def generate(requests: Sequence[LLMRequest]) -> list[Completion]:
        seen.extend(requests)
        out = []
        for r in requests:
            user = r.messages[-1].content
            a_text = user.split("[Answer A]\n", 1)[1].split("\n", 1)[0]
            position = "refined" if a_text.startswith("Refined") else "draft"
            n = a_text.split()[1].rstrip(".")
            text = verdicts[(n, position)]
            parsed, error = parse_structured(text, "stop", JudgeVerdict)
            out.append(
                Completion(
                    text=text,
                    finish_reason="stop",
                    prompt_tokens=10,
                    completion_tokens=5,
                    latency_s=0.0,
                    model="judge-model",
                    engine="test",
                    engine_version="0",
                    seed=1,
                    key="k",
                    cached=False,
                    parsed=parsed,
                    parse_error=error,
                )
            )
        return out

    return generate, seen


def v(verdict: str) -> str:
    return f'{{"verdict": "{verdict}", "reason": "because"}}'


@pytest.mark.parametrize(
    ("verdict", "order", "winner"),
    [
        ("A", "draft_first", "draft"),
        ("B", "draft_first", "refined"),
        ("A", "refined_first", "refined"),
        ("B", "refined_first", "draft"),
        ("tie", "draft_first", "tie"),
        ("tie", "refined_first", "tie"),
    ],
)
def test_a_verdict_maps_back_to_the_answer_in_that_position(verdict, order, winner):
    assert winner_of(verdict, order) == winner


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        ("refined", "refined", "refined_wins"),
        ("refined", "tie", "refined_wins"),
        ("tie", "refined", "refined_wins"),
        ("draft", "draft", "draft_wins"),
        ("tie", "draft", "draft_wins"),
        ("tie", "tie", "tie"),
        ("refined", "draft", "disagree"),
        ("draft", "refined", "disagree"),
    ],
)
def test_two_orders_combine_into_one_outcome(first, second, outcome):
    assert combine(first, second) == outcome


def test_judge_request_swaps_the_answers_and_asks_for_the_schema():
    p = pair(3)
    drafts_first = judge_request(p, "draft_first", SamplingParams(temperature=0.0))
    refined_first = judge_request(p, "refined_first", SamplingParams(temperature=0.0))
    assert drafts_first.schema is JudgeVerdict and refined_first.schema is JudgeVerdict
    a_draft = drafts_first.messages[-1].content
    assert a_draft.index("Draft 3.") < a_draft.index("Refined 3.")
    a_refined = refined_first.messages[-1].content
    assert a_refined.index("Refined 3.") < a_refined.index("Draft 3.")
    assert "Why 3?" in a_draft
    schema = drafts_first.json_schema()
    assert schema is not None and schema["properties"]["verdict"]["enum"] == ["A", "B", "tie"]
    zh = judge_request(pair(3, language="zh"), "draft_first", SamplingParams())
    assert "回答 A" in zh.messages[-1].content


def test_pairs_are_judged_in_both_orders_and_mapped_back():
    # 1: refined wins both; 2: the judge always says A (position bias) -> disagree;
    # 3: refined wins one order and ties the other; 4: ties both; 5: draft wins both;
    # 6: not rewritten, never sent; 7: one order is not valid JSON; 8: a verdict outside A/B/tie.
    verdicts = {
        ("1", "draft"): v("B"),
        ("1", "refined"): v("A"),
        ("2", "draft"): v("A"),
        ("2", "refined"): v("A"),
        ("3", "draft"): v("tie"),
        ("3", "refined"): v("A"),
        ("4", "draft"): v("tie"),
        ("4", "refined"): v("tie"),
        ("5", "draft"): v("A"),
        ("5", "refined"): v("B"),
        ("7", "draft"): "Answer B is better.",
        ("7", "refined"): v("A"),
        ("8", "draft"): v("B"),
        ("8", "refined"): v("C"),
    }
    generate, seen = scripted(verdicts)
    pairs = [pair(n, rewritten=n != 6) for n in range(1, 9)]
    rows = judge_pairs(
        pairs, generate, sampling=SamplingParams(), enabled=True, run_id="run", now=NOW
    )
    assert [r.outcome for r in rows] == [
        "refined_wins",
        "disagree",
        "refined_wins",
        "tie",
        "draft_wins",
        "not_rewritten",
        "judge_failed",
        "judge_failed",
    ]
    assert len(seen) == 2 * 7  # the unrewritten pair sent nothing
    first = rows[0]
    assert first.parent_id == "r-1" and first.draft_id == "a-1" and first.id.startswith("j-")
    assert first.draft_first is not None and first.refined_first is not None
    assert (first.draft_first.verdict, first.draft_first.winner) == ("B", "refined")
    assert (first.refined_first.verdict, first.refined_first.winner) == ("A", "refined")
    assert first.draft_first.lineage.prompt_name == "condor/judge/en"
    assert first.draft_first.lineage.model == "judge-model"
    assert rows[5].draft_first is None and rows[5].refined_first is None and rows[5].error is None
    assert rows[6].error is not None and rows[6].error.startswith("draft_first: invalid_json")
    assert rows[6].draft_first is not None and rows[6].draft_first.raw_text == "Answer B is better."
    assert rows[6].refined_first is not None and rows[6].refined_first.winner == "refined"
    assert rows[7].error is not None and rows[7].error.startswith("refined_first: schema_mismatch")
    # Content-addressed: the same verdicts give the same ids, other verdicts other ids.
    again = judge_pairs(
        pairs, scripted(verdicts)[0], sampling=SamplingParams(), enabled=True, run_id="x", now=NOW
    )
    assert [r.id for r in again] == [r.id for r in rows]
    flipped = judge_pairs(
        pairs[:1],
        scripted({**verdicts, ("1", "draft"): v("A")})[0],
        sampling=SamplingParams(),
        enabled=True,
        run_id="run",
        now=NOW,
    )
    assert flipped[0].outcome == "disagree" and flipped[0].id != rows[0].id
    # The rows fit their Parquet schema.
    frame = rows_to_frame(rows, RefineQualityRow)
    assert frame.height == 8 and frame["outcome"].to_list()[5] == "not_rewritten"
    # Position A named: pairs 1 (1 of 2), 2 (2), 3 (1), 5 (1 of 2), 7 (1), 8 (0 of 1): 6 of the
    # 9 decisive verdicts that parsed (ties and failed calls are not counted).
    assert first_position_share(rows) == pytest.approx(6 / 9, abs=1e-4)


def test_disabled_judge_sends_nothing():
    generate, seen = scripted({})
    rows = judge_pairs(
        [pair(1), pair(2, rewritten=False)],
        generate,
        sampling=SamplingParams(),
        enabled=False,
        run_id="run",
        now=NOW,
    )
    assert seen == [] and [r.outcome for r in rows] == ["disabled", "disabled"]
    assert (
        summarize((r.origin.task, r.origin.difficulty, r.outcome) for r in rows).overall.win_rate
        is None
    )


def test_pair_counts_as_rewritten_only_when_a_round_changed_the_answer():
    row = {
        "id": "r-1",
        "parent_id": "a-1",
        "question_id": "q-1",
        "tag_id": "t",
        "tag_path": "P",
        "task": "view",
        "difficulty": "easy",
        "language": "en",
        "question": "Why?",
        "draft_answer": "Because.",
        "answer": "Because, since.",
        "rounds": [{"answer": "Because, since."}],
    }
    assert pair_from_refined_row(row).rewritten
    unrewritten = {**row, "answer": "Because.", "rounds": [{"answer": None}]}
    assert not pair_from_refined_row(unrewritten).rewritten
    # A rewrite that reproduced the draft word for word: nothing to compare.
    assert not pair_from_refined_row(
        {**row, "answer": "Because.", "rounds": [{"answer": "Because."}]}
    ).rewritten


def test_win_rate_counts_ties_and_disagreements_apart():
    items = [
        ("view", "easy", "refined_wins"),
        ("view", "easy", "refined_wins"),
        ("view", "hard", "draft_wins"),
        ("creation", "easy", "tie"),
        ("creation", "hard", "disagree"),
        ("creation", "hard", "not_rewritten"),
        ("creation", "medium", "judge_failed"),
    ]
    s = summarize(items)
    assert (s.overall.judged, s.overall.refined_wins, s.overall.draft_wins) == (5, 2, 1)
    assert (s.overall.ties, s.overall.disagreements) == (1, 1)
    assert s.overall.win_rate == 0.4 and s.overall.draft_win_rate == 0.2
    assert s.by_task["view"].win_rate == pytest.approx(2 / 3, abs=1e-4)
    assert s.by_task["creation"].win_rate == 0.0 and s.by_task["creation"].judged == 2
    assert list(s.by_difficulty) == ["easy", "hard"]  # medium had no judged pair
    assert s.by_difficulty["easy"].as_dict() == {
        "judged": 3,
        "refined_wins": 2,
        "draft_wins": 0,
        "ties": 1,
        "disagreements": 0,
        "win_rate": pytest.approx(2 / 3, abs=1e-4),
        "draft_win_rate": 0.0,
    }
    meta = s.as_metadata()
    assert meta["not_rewritten"] == 1 and meta["judge_failed"] == 1 and meta["judged"] == 5
    assert meta["outcomes"]["disabled"] == 0
    with pytest.raises(ValueError, match="unknown refine_quality outcome 'won'"):
        summarize([("view", "easy", "won")])


def test_card_section_says_not_measured_and_names_the_judge_caveat():
    missing = "\n".join(quality_card_lines(None, judge_models=[]))
    assert "Not measured" in missing and "%" not in missing
    nothing = "\n".join(
        quality_card_lines(summarize([("view", "easy", "not_rewritten")]), judge_models=["m"])
    )
    assert "Win rate not measured: no pair was judged." in nothing
    s = summarize([("view", "easy", "refined_wins"), ("view", "hard", "tie")])
    text = "\n".join(quality_card_lines(s, judge_models=["m"], stale=2))
    assert "refined-over-draft win rate: 50.0% (1 of 2 judged pairs" in text
    assert "135M judge" in text and "7B+ judge it is the figure to read" in text
    assert "| view | 2 | 1 | 0 | 1 | 0 | 50.0% |" in text
    assert "| hard | 1 | 0 | 0 | 1 | 0 | 0.0% |" in text
    assert "2 judgments of refined answers no longer in the data were ignored" in text
