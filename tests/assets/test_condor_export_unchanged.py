"""Condor's exports survive the move to the three-methods layout: from the same inputs and
scripted LLM, the same rows with the same ids and texts as the pre-move code wrote.

tests/fixtures/condor_export_before_methods.parquet was written by the code at commit fb290a4
(before methods/, stages/ and the long candidates format) from exactly this world: the rows of
exports/sft_refine.parquet and exports/sft_void.parquet, with a `variant` column."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from condor_dagster.resources.scripted_llm import ScriptedLLMResource, ScriptRule

from .conftest import ALL_ASSETS, make_world

FIXTURE = Path(__file__).parents[1] / "fixtures" / "condor_export_before_methods.parquet"
COLUMNS = ["id", "question", "answer", "tag_id", "tag_path", "task", "difficulty"]
LINKS = ["question_id", "parent_id"]

# One distinct question triple per task type (some with {seed}, so they differ across tags),
# a refused answer for the haiku, and refinement that rewrites every draft.
TASKS = {
    "Role Playing": (
        "Pretend you are a ship captain and greet me.",
        "As a medieval blacksmith, explain how you temper a sword.",
        "Play a detective interviewing a witness about case {seed}.",
    ),
    "Daily Chat": (
        "What should I cook tonight?",
        "How can I make my mornings less rushed?",
        "My friend forgot my birthday {seed}; how should I bring it up?",
    ),
    "Domain Knowledge QA": (
        "What does a capacitor do?",
        "How does TCP congestion control react to packet loss?",
        "Why do B-trees suit disk storage better than binary trees?",
    ),
    "Given Material Processing": (
        "Summarize: 'The meeting moved to Friday.'",
        "Extract the dates from: 'Launch on 3 May, review on 9 June.'",
        "Compare these two plans for budget {seed}: A costs 5k, B costs 8k.",
    ),
    "Response Format Control": (
        "List three fruits as a bullet list.",
        "Answer in exactly two sentences: why is the sky blue?",
        "Give a JSON object with keys name and age for a cat.",
    ),
    "View": (
        "Is remote work better than office work?",
        "Should cities ban cars from their centres?",
        "Is it ethical to use AI to write homework {seed}?",
    ),
    "Creation": (
        "Write a haiku about rain.",
        "Write a short story opening about a lighthouse.",
        "Design a board game about trading spices.",
    ),
}
RULES = [
    ScriptRule(
        pattern="Critique the answer",
        response='{"strengths": ["clear"], "weaknesses": ["no example"], '
        '"suggestions": ["add an example"]}',
    ),
    ScriptRule(pattern="Here is feedback on your answer", response="Improved {seed}."),
    ScriptRule(pattern="sub-topics", response='{"names": ["Alpha {seed}", "Beta {seed}"]}'),
    ScriptRule(pattern="haiku", response="I'm sorry, but I can't help with that."),
    *(
        ScriptRule(pattern=task, response=json.dumps({"easy": e, "medium": m, "hard": h}))
        for task, (e, m, h) in TASKS.items()
    ),
]


def test_condor_exports_keep_their_rows_ids_and_texts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    llm = ScriptedLLMResource(
        rules=RULES,
        default_response="A scripted answer {seed}.",
        cache_path=str(tmp_path / "cache.sqlite3"),
    )
    world = make_world(tmp_path, monkeypatch, llm)
    assert world.materialize_tree(
        max_roots=2, subdomains_per_root=1, leaves_per_subdomain=2
    ).success
    world.sync_tags()
    keys = world.tags()
    assert len(keys) == 4
    assert world.materialize_tags(keys).success
    out = tmp_path / "exports"
    run = dg.materialize(
        ALL_ASSETS,
        selection=["sft_dataset"],
        resources=world.resources,
        instance=world.instance,
        run_config={"ops": {"sft_dataset": {"config": {"export_dir": str(out)}}}},
    )
    assert run.success

    before = pl.read_parquet(FIXTURE)
    for variant in ("refine", "void"):
        expected = before.filter(pl.col("variant") == variant).select(*COLUMNS, *LINKS).sort("id")
        per_method = pl.read_parquet(out / "condor" / f"sft_{variant}.parquet")
        assert_frame_equal(per_method.select(*COLUMNS, *LINKS).sort("id"), expected)
        # The mixed file of the variant holds the same Condor rows (only Condor ran).
        mixed = pl.read_parquet(out / f"sft_{variant}.parquet")
        assert sorted(mixed["id"]) == sorted(expected["id"])
        assert set(mixed["method"]) == {"condor"}
    # The world is not trivial: duplicates across tags and a refusal were dropped.
    samples = world.read("sft_dataset")
    reasons = set(samples["drop_reason"].drop_nulls())
    assert {"cross_partition_duplicate", "refusal"} <= reasons
