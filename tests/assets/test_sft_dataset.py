"""sft_dataset: cross-tag dedup over stored embeddings, filters, exports, card, blocking check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import polars as pl
from polars.testing import assert_frame_equal

from condor_dagster.methods.condor.assets import CONDOR_ASSETS
from condor_dagster.methods.dataset import sft_dataset
from condor_dagster.resources.scripted_llm import ScriptRule

from .conftest import SCRIPTED_RULES, CondorWorld, make_world, scripted_llm


def export(world: CondorWorld, out: Path, **config: object) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        CONDOR_ASSETS,
        selection=[sft_dataset],
        resources=world.resources,
        instance=world.instance,
        run_config={"ops": {"sft_dataset": {"config": {"export_dir": str(out), **config}}}},
        raise_on_error=False,
    )


def _distinct_questions_world(tmp_path, monkeypatch, extra_rules=()) -> CondorWorld:
    rules = [
        *extra_rules,
        *SCRIPTED_RULES[:2],
        ScriptRule(pattern="sub-topics", response='{"names": ["Alpha {seed}", "Beta {seed}"]}'),
        ScriptRule(
            pattern="three questions",
            response='{"easy": "How do I train my puppy to sit?", '
            '"medium": "Which vaccines does a kitten need in year {seed}?", '
            '"hard": "Design a data pipeline for sensor {seed} with strict latency limits."}',
        ),
    ]
    return make_world(tmp_path, monkeypatch, scripted_llm(tmp_path / "c.sqlite3", rules=rules))


def test_exports_from_several_partitions_round_trip_through_datasets(tmp_path, monkeypatch):
    from datasets import load_dataset

    world = _distinct_questions_world(tmp_path, monkeypatch)
    assert world.materialize_tree().success
    world.sync_tags()
    keys = world.tags()
    assert world.materialize_tags(keys[:3]).success
    assert world.materialize_tags(keys[3:5]).success  # a second run; keys[5:] never materialized
    out = tmp_path / "exports"
    run = export(world, out)
    assert run.success
    samples = world.read("sft_dataset")
    assert set(samples["partition_key"]) == set(keys[:5])  # missing partitions are skipped

    # The asset scans the stored partitions lazily; the eager reading of the same files gives
    # the same rows, order, columns and values.
    refined, drafts = (
        pl.concat([world.read(asset, key) for key in keys[:5]], how="vertical_relaxed")
        for asset in ("refined_answers", "draft_answers")
    )
    draft_cols = drafts.select(
        pl.col("id").alias("parent_id"),
        pl.col("truncated").alias("draft_truncated"),
        pl.col("lineage").struct.field("finish_reason").alias("draft_finish_reason"),
        pl.col("lineage").alias("draft_lineage"),
    )
    expected = refined.join(draft_cols, on="parent_id", how="left").sort("id")
    assert samples.columns == [
        *expected.columns,
        *("refine_finish_reason", "root_domain", "question_dup_reason", "question_dup_of"),
        *("question_similarity", "dedup_index", "drop_reason_refine", "kept_refine"),
        *("drop_reason_void", "kept_void"),
    ]
    assert_frame_equal(samples.select(expected.columns), expected)

    # The puppy question is asked under every tag: only the smallest question id survives.
    puppy = samples.filter(pl.col("question").str.contains("puppy"))
    assert puppy.filter(pl.col("kept_refine"))["question_id"].to_list() == [
        min(puppy["question_id"])
    ]
    assert set(puppy.filter(~pl.col("kept_refine"))["drop_reason_refine"]) == {
        "cross_tag_duplicate"
    }

    for variant in ("refine", "void"):
        kept = samples.filter(pl.col(f"kept_{variant}"))
        parquet = pl.read_parquet(out / f"sft_{variant}.parquet")
        assert sorted(parquet["id"]) == sorted(kept["id"])
        answer_col = "answer" if variant == "refine" else "draft_answer"
        lineage = pl.exclude("id", "question", "answer", "draft_answer")
        assert_frame_equal(
            parquet,
            kept.select("id", "question", pl.col(answer_col).alias("answer"), lineage),
        )
        assert {"draft_lineage", "rounds", "tag_path", "question_id"} <= set(parquet.columns)
        messages = load_dataset(
            "json", data_files=str(out / f"sft_{variant}.messages.jsonl"), split="train"
        )
        assert len(messages) == kept.height
        first = messages[0]
        assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
        expected = kept.filter(pl.col("id") == first["id"]).row(0, named=True)
        assert first["messages"][1]["content"] == expected[answer_col]
        sharegpt = load_dataset(
            "json", data_files=str(out / f"sft_{variant}.sharegpt.jsonl"), split="train"
        )
        assert [t["from"] for t in sharegpt[0]["conversations"]] == ["human", "gpt"]
        as_parquet = load_dataset(
            "parquet", data_files=str(out / f"sft_{variant}.parquet"), split="train"
        )
        assert len(as_parquet) == kept.height

    card = (out / "README.md").read_text(encoding="utf-8")
    (refine_n, void_n) = map(int, re.search(r"\| samples \| (\d+) \| (\d+) \|", card).groups())
    assert refine_n == sum(1 for _ in (out / "sft_refine.messages.jsonl").open(encoding="utf-8"))
    assert void_n == sum(1 for _ in (out / "sft_void.messages.jsonl").open(encoding="utf-8"))
    assert "## Provenance" in card and "questions/en" in card
    draft_tokens = int(drafts["lineage"].struct.field("completion_tokens").sum())
    rounds = refined.select(pl.col("rounds").explode()).unnest("rounds")
    refine_tokens = int(rounds["critique_lineage"].struct.field("completion_tokens").sum()) + int(
        rounds["answer_lineage"].struct.field("completion_tokens").fill_null(0).sum()
    )
    assert f"- draft completion tokens: {draft_tokens}\n" in card
    assert f"- refine completion tokens (critiques + rewrites): {refine_tokens}\n" in card

    # Deterministic: exporting again (other partition order in the instance) gives the same.
    again = export(world, tmp_path / "again")
    assert again.success
    assert (tmp_path / "again" / "sft_refine.messages.jsonl").read_bytes() == (
        out / "sft_refine.messages.jsonl"
    ).read_bytes()


def test_filters_drop_refusals_and_truncated_answers_with_reasons(tmp_path, monkeypatch):
    refusal = ScriptRule(pattern="puppy", response="I'm sorry, but I can't help with that.")
    truncated = ScriptRule(pattern="kitten", response="Kittens need", finish_reason="length")
    world = _distinct_questions_world(tmp_path, monkeypatch, extra_rules=[refusal, truncated])
    assert world.materialize_tree(
        max_roots=1, subdomains_per_root=1, leaves_per_subdomain=1
    ).success
    world.sync_tags()
    assert world.materialize_tags(world.tags()).success
    assert export(world, tmp_path / "out").success
    samples = world.read("sft_dataset")
    void = dict(zip(samples["question"], samples["drop_reason_void"], strict=True))
    assert {void[q] for q in void if "puppy" in q} == {"refusal"}
    assert {void[q] for q in void if "kitten" in q} == {"truncated"}
    meta = export(world, tmp_path / "out2").asset_materializations_for_node("sft_dataset")[0]
    drops = json.loads(meta.metadata["dropped_by_reason"].value)
    assert drops["void"]["refusal"] >= 1 and drops["void"]["truncated"] >= 1


def test_blocking_check_stops_export_when_rows_lost_their_tree_node(tmp_path, monkeypatch):
    world = _distinct_questions_world(tmp_path, monkeypatch)
    assert world.materialize_tree(
        max_roots=1, subdomains_per_root=1, leaves_per_subdomain=1
    ).success
    world.sync_tags()
    assert world.materialize_tags(world.tags()).success
    taxonomy = tmp_path / "other.yaml"
    taxonomy.write_text("roots: [Astronomy]\n", encoding="utf-8")
    assert world.materialize_tree(taxonomy_path=str(taxonomy), depth=1).success
    out = tmp_path / "exports"
    run = export(world, out)
    assert not run.success
    (check,) = run.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["problems"].value["rows_without_tree_node"] > 0
    assert not out.exists() or not any(out.iterdir())


def test_nothing_to_export_is_a_clear_failure(scripted_world: CondorWorld, tmp_path):
    assert scripted_world.materialize_tree().success
    run = export(scripted_world, tmp_path / "out")
    assert not run.success
    failure = run.get_step_failure_events()[0]
    assert "no materialized refined_answers partitions yet" in str(failure.event_specific_data)
