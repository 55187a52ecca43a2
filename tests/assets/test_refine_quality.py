"""refine_quality: the pairwise judge end to end with a scripted judge, and what the dataset
card makes of it (win rates, figures, "not measured")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from condor_dagster.methods.condor.assets import TAG_ASSETS
from condor_dagster.methods.condor.card_figures import FIGURE_FILES
from condor_dagster.methods.condor.refine_quality import RefineQualityConfig
from condor_dagster.methods.dataset import DATASET_ASSETS, sft_dataset
from condor_dagster.resources.scripted_llm import ScriptRule

from .conftest import ONE_TAG, SCRIPTED_RULES, CondorWorld, make_world, scripted_llm

JUDGE = "serves the user better"  # only the judge prompt says this
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def verdict(value: str) -> str:
    return f'{{"verdict": "{value}", "reason": "scripted"}}'


# The scripted questions are "Which tool suits ..." (easy), "How would you plan ..." (medium)
# and "Why does approach ..." (hard); refined answers read "Improved <seed>.", drafts
# "A scripted answer.".
# - easy: the judge prefers the refined answer in either position -> refined_wins
# - medium: the judge always answers A (pure position bias) -> disagree
# - hard: the critique finds no weakness, nothing is rewritten -> not_rewritten, no request
JUDGE_RULES = [
    ScriptRule(
        pattern=rf"(?s)Which tool suits.*\[Answer A\]\s*Improved.*{JUDGE}", response=verdict("A")
    ),
    ScriptRule(pattern=rf"(?s)Which tool suits.*{JUDGE}", response=verdict("B")),
    ScriptRule(pattern=rf"(?s)How would you plan.*{JUDGE}", response=verdict("A")),
    ScriptRule(
        pattern=r"(?s)Why does approach.*Critique the answer",
        response='{"strengths": ["complete"], "weaknesses": [], "suggestions": []}',
    ),
]


def world_with(tmp_path: Path, monkeypatch, rules: list[ScriptRule]) -> CondorWorld:
    llm = scripted_llm(tmp_path / "c.sqlite3", rules=[*rules, *SCRIPTED_RULES])
    return make_world(tmp_path, monkeypatch, llm)


def one_tag(
    world: CondorWorld, selection: list[Any] = TAG_ASSETS
) -> tuple[str, dg.ExecuteInProcessResult]:
    assert world.materialize_tree(**ONE_TAG).success
    world.sync_tags()
    (key,) = world.tags()
    run = dg.materialize(
        DATASET_ASSETS,
        selection=selection,
        resources=world.resources,
        instance=world.instance,
        partition_key=key,
        # Keep the seed-only variants of each scripted question, so every difficulty has one
        # row per task (7) instead of the one or two near-duplicate removal would leave.
        run_config={
            "ops": {"condor__deduplicated_questions": {"config": {"similarity_threshold": 1.0}}}
        },
    )
    assert run.success
    return key, run


def export(world: CondorWorld, out: Path) -> dg.ExecuteInProcessResult:
    run = dg.materialize(
        DATASET_ASSETS,
        selection=[sft_dataset],
        resources=world.resources,
        instance=world.instance,
        run_config={"ops": {"sft_dataset": {"config": {"export_dir": str(out)}}}},
    )
    assert run.success
    return run


def metadata(run: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (event,) = run.asset_materializations_for_node(node)
    return {k: v.value for k, v in event.metadata.items()}


def test_judge_in_both_orders_gives_win_rates_in_metadata_and_card(tmp_path, monkeypatch):
    world = world_with(tmp_path, monkeypatch, JUDGE_RULES)
    key, run = one_tag(world)
    refined = world.read("refined_answers", key).unnest("origin")
    quality = world.read("refine_quality", key).unnest("origin")
    assert sorted(quality["parent_id"]) == sorted(refined["id"])
    assert quality["id"].str.starts_with("j-").all() and quality["id"].n_unique() == quality.height

    expected = {"easy": "refined_wins", "medium": "disagree", "hard": "not_rewritten"}
    for level, outcome in quality.select("difficulty", "outcome").iter_rows():
        assert outcome == expected[level], (level, outcome)
    n_easy, n_medium, n_hard = (
        int((quality["difficulty"] == level).sum()) for level in ("easy", "medium", "hard")
    )
    assert (n_easy, n_medium, n_hard) == (7, 7, 7)

    # One judged row, traced: both calls, mapped back, with their lineage.
    easy = quality.filter(pl.col("difficulty") == "easy").row(0, named=True)
    assert (easy["draft_first"]["verdict"], easy["draft_first"]["winner"]) == ("B", "refined")
    assert (easy["refined_first"]["verdict"], easy["refined_first"]["winner"]) == ("A", "refined")
    assert easy["draft_first"]["lineage"]["prompt_name"] == "condor/judge/en"
    assert easy["refined_first"]["lineage"]["run_id"] == run.run_id
    parent = refined.filter(pl.col("id") == easy["parent_id"]).row(0, named=True)
    assert easy["draft_id"] == parent["parent_id"] and easy["question_id"] == parent["question_id"]
    hard = quality.filter(pl.col("difficulty") == "hard").row(0, named=True)
    assert hard["draft_first"] is None and hard["refined_first"] is None

    meta = metadata(run, "condor__refine_quality")
    judged = n_easy + n_medium
    assert meta["requests"] == 2 * judged  # the unrewritten rows sent nothing
    assert (meta["judged"], meta["refined_wins"], meta["draft_wins"]) == (judged, n_easy, 0)
    assert (meta["ties"], meta["disagreements"]) == (0, n_medium)
    assert (meta["not_rewritten"], meta["judge_failed"]) == (n_hard, 0)
    assert meta["win_rate"] == round(n_easy / judged, 4)
    assert meta["by_difficulty"]["easy"]["win_rate"] == 1.0
    assert meta["by_difficulty"]["medium"] == {
        "judged": n_medium,
        "refined_wins": 0,
        "draft_wins": 0,
        "ties": 0,
        "disagreements": n_medium,
        "win_rate": 0.0,
        "draft_win_rate": 0.0,
    }
    assert "hard" not in meta["by_difficulty"]
    # Each task has one easy (won) and one medium (disagreed) pair.
    assert set(meta["by_task"]) == set(refined["task"])
    assert {t["win_rate"] for t in meta["by_task"].values()} == {0.5}
    assert all(t["disagreements"] == 1 for t in meta["by_task"].values())
    assert meta["win_rate_by_partition"] == {key: round(n_easy / judged, 4)}
    # Easy pairs: one A each (refined first); medium pairs: two As each.
    assert meta["first_position_share"] == round((n_easy + 2 * n_medium) / (2 * judged), 4)
    checks = {c.check_name: c.passed for c in run.get_asset_check_evaluations()}
    assert checks["not_empty"] and checks["parents_are_refined_answers"]

    out = tmp_path / "exports"
    exported = export(world, out)
    card = (out / "README.md").read_text(encoding="utf-8")
    rate = f"{100 * n_easy / judged:.1f}%"
    assert (
        f"- refined-over-draft win rate: {rate} ({n_easy} of {judged} judged pairs; "
        f"draft wins 0, ties 0, disagreements {n_medium})"
    ) in card
    assert f"| all | {judged} | {n_easy} | 0 | 0 | {n_medium} | {rate} |" in card
    assert f"| easy | {n_easy} | {n_easy} | 0 | 0 | 0 | 100.0% |" in card
    assert f"| medium | {n_medium} | 0 | 0 | 0 | {n_medium} | 0.0% |" in card
    assert f"{n_hard} not rewritten by refinement, 0 judge failed" in card
    assert "- judge model: scripted" in card and "135M judge" in card

    # The pictures: beside the card, linked relatively, valid PNGs, listed in the metadata.
    files = metadata(exported, "sft_dataset")["files"]
    for name, file in FIGURE_FILES.items():
        path = out / "condor" / file
        assert f"](condor/{file})" in card
        assert files[f"condor_{name}"] == str(path)
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
        from matplotlib import image

        assert image.imread(path).shape[2] in (3, 4)


def test_invalid_verdicts_are_judge_failed_and_counted(tmp_path, monkeypatch):
    outside = ScriptRule(pattern=JUDGE, response=verdict("C"))  # not A, B or tie
    world = world_with(tmp_path, monkeypatch, [outside])
    key, run = one_tag(world)
    quality = world.read("refine_quality", key)
    assert quality.height > 0 and (quality["outcome"] == "judge_failed").all()
    assert quality["error"].str.contains("schema_mismatch").all()
    meta = metadata(run, "condor__refine_quality")
    assert meta["judge_failed"] == quality.height and meta["judged"] == 0
    assert meta["win_rate"] is None and meta["parse_failures"] == 2 * quality.height
    out = tmp_path / "exports"
    export(world, out)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"0 not rewritten by refinement, {quality.height} judge failed" in card
    assert "Win rate not measured: no pair was judged." in card


def test_card_says_not_measured_without_refine_quality(tmp_path, monkeypatch):
    world = world_with(tmp_path, monkeypatch, [])
    one_tag(world, selection=[a for a in TAG_ASSETS if a.key.path[-1] != "refine_quality"])
    out = tmp_path / "exports"
    export(world, out)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Not measured: refine_quality has no materialized partitions." in card
    assert "win rate:" not in card


def test_config_refuses_a_budget_too_small_for_a_verdict():
    with pytest.raises(ValueError, match="max_tokens must be >= 32 so the verdict JSON can close"):
        RefineQualityConfig(max_tokens=8)
    with pytest.raises(ValueError, match="temperature"):
        RefineQualityConfig(temperature=-1.0)
    assert RefineQualityConfig().max_tokens == 192 and RefineQualityConfig().enabled
