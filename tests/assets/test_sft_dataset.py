"""sft_dataset: cross-tag dedup over stored embeddings, filters, exports, card, blocking check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import polars as pl

from condor_dagster.core.candidates import CANDIDATE_COLUMNS
from condor_dagster.core.export import DECISION_COLUMNS
from condor_dagster.methods.dataset import DATASET_ASSETS, sft_dataset
from condor_dagster.resources.scripted_llm import ScriptRule

from .conftest import SCRIPTED_RULES, CondorWorld, make_world, scripted_llm


def export(world: CondorWorld, out: Path, **config: object) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        DATASET_ASSETS,
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

    # One row per candidate of every materialized partition, in the mixed schema.
    candidates = pl.concat([world.read("sft_candidates", key) for key in keys[:5]])
    assert sorted(samples.select("id", "variant").rows()) == sorted(
        candidates.select("id", "variant").rows()
    )
    assert samples.columns == [
        *(c for c in CANDIDATE_COLUMNS if c != "origin"),
        "origin",
        *DECISION_COLUMNS,
    ]
    assert set(samples["variant"]) == {"refine", "void"} and set(samples["method"]) == {"condor"}
    # Both variants of a question share the refined answer's id and carry their own answer.
    refined = pl.concat([world.read("refined_answers", key) for key in keys[:5]])
    by_id = {r["id"]: r for r in refined.iter_rows(named=True)}
    for row in samples.iter_rows(named=True):
        source = by_id[row["id"]]
        expected = source["answer"] if row["variant"] == "refine" else source["draft_answer"]
        assert row["answer"] == expected and row["question"] == source["question"]

    # The puppy question is asked under every tag: only the smallest question id survives.
    puppy = samples.filter(pl.col("question").str.contains("puppy"))
    assert puppy.filter(pl.col("kept"))["question_id"].unique().to_list() == [
        min(puppy["question_id"])
    ]
    assert set(puppy.filter(~pl.col("kept"))["drop_reason"]) == {"cross_partition_duplicate"}

    for variant in ("refine", "void"):
        kept = samples.filter(pl.col("kept") & (pl.col("variant") == variant))
        per_method = pl.read_parquet(out / "condor" / f"sft_{variant}.parquet")
        assert sorted(per_method["id"]) == sorted(kept["id"])
        assert per_method.sort("id")["answer"].to_list() == kept.sort("id")["answer"].to_list()
        # The origin struct comes out as columns, beside Condor's own ones and the lineage.
        assert {"tag_path", "task", "difficulty", "tag_id", "question_id", "lineage"} <= set(
            per_method.columns
        )
        assert ("rounds" in per_method.columns) and "embedding" not in per_method.columns
        mixed = pl.read_parquet(out / f"sft_{variant}.parquet")
        assert sorted(mixed["id"]) == sorted(kept["id"])
        for folder in (out / "condor", out):
            messages = load_dataset(
                "json", data_files=str(folder / f"sft_{variant}.messages.jsonl"), split="train"
            )
            assert len(messages) == kept.height
            first = messages[0]
            assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
            expected = kept.filter(pl.col("id") == first["id"]).row(0, named=True)
            assert first["messages"][1]["content"] == expected["answer"]
            assert first["method"] == "condor" and first["variant"] == variant
            sharegpt = load_dataset(
                "json", data_files=str(folder / f"sft_{variant}.sharegpt.jsonl"), split="train"
            )
            assert [t["from"] for t in sharegpt[0]["conversations"]] == ["human", "gpt"]
            as_parquet = load_dataset(
                "parquet", data_files=str(folder / f"sft_{variant}.parquet"), split="train"
            )
            assert len(as_parquet) == kept.height
        condor_messages = load_dataset(
            "json", data_files=str(out / "condor" / f"sft_{variant}.messages.jsonl"), split="train"
        )
        # Per-method records carry Condor's origin fields; the mixed ones its origin as JSON.
        assert condor_messages[0]["tag_path"] and condor_messages[0]["task"]
        assert json.loads(messages[0]["origin"])["tag_path"]

    card = (out / "README.md").read_text(encoding="utf-8")
    for variant in ("refine", "void"):
        found = re.search(rf"\| condor \| {variant} \| (\d+) \| (\d+) \|", card)
        assert found, card
        lines = out / "condor" / f"sft_{variant}.messages.jsonl"
        assert int(found.group(1)) == sum(1 for _ in lines.open(encoding="utf-8"))
        assert int(found.group(2)) == samples.filter(pl.col("variant") == variant).height
    assert "## Provenance" in card and "condor/questions/en sha" in card
    drafts = pl.concat([world.read("draft_answers", key) for key in keys[:5]])
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
    for name in ("sft_refine.messages.jsonl", "condor/sft_void.messages.jsonl"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()


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
    samples = world.read("sft_dataset").filter(pl.col("variant") == "void")
    void = dict(zip(samples["question"], samples["drop_reason"], strict=True))
    assert {void[q] for q in void if "puppy" in q} == {"refusal"}
    assert {void[q] for q in void if "kitten" in q} == {"truncated"}
    meta = export(world, tmp_path / "out2").asset_materializations_for_node("sft_dataset")[0]
    drops = json.loads(meta.metadata["dropped_by_reason"].value)
    assert drops["condor/void"]["refusal"] >= 1 and drops["condor/void"]["truncated"] >= 1


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
    assert check.metadata["problems"].value["condor: rows_without_tree_node"] > 0
    assert not out.exists() or not any(out.iterdir())


def test_nothing_to_export_is_a_clear_failure(scripted_world: CondorWorld, tmp_path):
    assert scripted_world.materialize_tree().success
    run = export(scripted_world, tmp_path / "out")
    assert not run.success
    failure = run.get_step_failure_events()[0]
    assert "no materialized sft_candidates partitions yet" in str(failure.event_specific_data)
