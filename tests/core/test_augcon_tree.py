"""AugCon's Context-Split-Tree growth, pure: breadth-first with one generate call per level
across every chunk, a hallucinated split dropped by ROUGE-L precision, a part as long as its
parent ending the branch, and further passes only while a chunk is short of its target."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from condor_dagster.core.llm import Completion, LLMRequest, SamplingParams
from condor_dagster.methods.augcon.context_tree import TreeSettings, grow_trees
from condor_dagster.methods.augcon.examples import QAExample
from condor_dagster.methods.augcon.records import AugconOrigin, ChunkRow, SplitOutput
from condor_dagster.methods.augcon.split_rules import SplitRules

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
EXAMPLES = {
    lang: [QAExample(context="Cats sleep a lot.", question="Why do cats sleep?", answer="Rest.")]
    for lang in ("en", "zh")
}
PASSAGE = re.compile(r"(?:Passage:|段落：)\n(.*?)\n\n", re.S)
SENTENCES = [
    "The mill opens its sluice at dawn to let the river water through.",
    "It closes the sluice at dusk so that the pond fills again overnight.",
]
HALLUCINATED = "Volcanoes on Mars erupted for billions of years, shaping Olympus Mons."


def chunk(n: int, text: str, *, target: int, language: str = "en-us") -> dict[str, Any]:
    origin = AugconOrigin(
        document_id=f"d-{n}",
        source=f"{n}.txt",
        chunk_id=f"ck-{n}",
        node_path="",
        depth=0,
        tree_pass=0,
        context=text,
    )
    return ChunkRow(
        id=f"ck-{n}",
        parent_id=f"d-{n}",
        method="augcon",
        partition_key="s",
        language=language,
        origin=origin,
        position=0,
        text=text,
        chars=len(text),
        quota=target,
        target=target,
    ).model_dump()


def completion(parsed: SplitOutput) -> Completion:
    return Completion(
        text=parsed.model_dump_json(),
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=10,
        latency_s=0.0,
        model="m",
        engine="scripted",
        engine_version="0",
        seed=0,
        key="k",
        cached=False,
        parsed=parsed,
    )


class Splitter:
    """Splits a context at its sentence end (or, for `lies_about`, invents the parts), and
    records each generate call's batch size."""

    def __init__(self, lies_about: str = "") -> None:
        self.calls: list[int] = []
        self.lies_about = lies_about

    def __call__(self, requests: Sequence[LLMRequest]) -> list[Completion]:
        self.calls.append(len(requests))
        out = []
        for request in requests:
            match = PASSAGE.search(request.messages[-1].content)
            assert match is not None
            context = match.group(1)
            question = f"What happens in: {context[:30]} (pass {request.sample_index})?"
            if self.lies_about and self.lies_about in context:
                parts = (HALLUCINATED, HALLUCINATED[:40])
            elif ". " in context:
                first, second = context.split(". ", 1)
                parts = (first + ".", second)
            else:  # one sentence: a part as long as the parent ends the branch
                parts = (context, context[:10])
            out.append(completion(SplitOutput(question=question, part_1=parts[0], part_2=parts[1])))
        return out


def grow(chunks: list[dict[str, Any]], generate: Splitter, **settings: Any) -> list[Any]:
    return grow_trees(
        chunks,
        generate,
        examples=EXAMPLES,
        sampling=SamplingParams(temperature=0.85, max_tokens=256),
        settings=TreeSettings(rules=SplitRules(max_depth=4), **settings),
        run_id="run",
        now=NOW,
    )


def test_one_call_per_level_across_chunks_and_the_tree_is_inspectable() -> None:
    text = " ".join(SENTENCES)
    splitter = Splitter()
    rows = grow([chunk(1, text, target=1), chunk(2, text + " Again.", target=1)], splitter)
    # level 0: two roots; level 1: two children each; level 2: chunk 2's longer second part
    # (its "Again." half is a leaf: no request); no second pass (targets met).
    assert splitter.calls == [2, 4, 1]
    roots = [r for r in rows if r.origin.depth == 0]
    assert [r.stop_reason for r in roots] == ["split", "split"]
    children = [r for r in rows if r.origin.depth == 1 and r.origin.chunk_id == "ck-1"]
    assert [r.origin.node_path for r in children] == ["1", "2"]
    assert {r.parent_id for r in children} == {roots[0].id}
    assert [r.origin.context for r in children] == SENTENCES
    assert all(r.stop_reason == "part_not_shorter" and r.drop_reason is None for r in children)
    assert roots[0].parent_id == "ck-1" and roots[0].support == [1.0, 1.0]
    assert all((r.lineage is None) == (r.stop_reason == "short_context") for r in rows)


def test_a_hallucinated_split_keeps_its_question_and_ends_the_branch() -> None:
    rows = grow([chunk(1, " ".join(SENTENCES), target=1)], Splitter(lies_about="mill"))
    assert len(rows) == 1
    assert rows[0].stop_reason == "unsupported_split"
    assert rows[0].drop_reason is None and max(rows[0].support) < 0.7


def test_passes_continue_only_while_a_chunk_is_short_of_its_target() -> None:
    text = " ".join(SENTENCES)
    splitter = Splitter()
    rows = grow([chunk(1, text, target=3), chunk(2, text, target=7)], splitter, max_passes=3)
    passes = {
        cid: {r.origin.tree_pass for r in rows if r.origin.chunk_id == cid}
        for cid in ("ck-1", "ck-2")
    }
    assert passes == {"ck-1": {0}, "ck-2": {0, 1, 2}}  # 3 questions a tree; 7 needs the bound
    # the further passes ride in the same level-by-level batches as the first trees
    assert splitter.calls == [2, 4, 1, 2, 1, 2]
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids))
    assert (
        grow([chunk(1, text, target=3), chunk(2, text, target=7)], Splitter(), max_passes=3) == rows
    )


def test_a_short_chunk_is_a_leaf_without_a_request() -> None:
    splitter = Splitter()
    rows = grow([chunk(1, "Too short.", target=1)], splitter)
    assert splitter.calls == [] and rows[0].drop_reason == "short_context"
    assert rows[0].lineage is None
