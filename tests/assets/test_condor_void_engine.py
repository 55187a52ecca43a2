"""The Condor Void chain on the real in-process vLLM engine (tiny random-weight model, CPU).

The text is noise; what is checked is the machinery: structured outputs through the engine,
counts, lineage, multi-partition batching and one engine per run."""

from __future__ import annotations

from collections import Counter

import dagster as dg
import polars as pl
import pytest

from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN
from condor_dagster.methods.condor.records import DIFFICULTIES, TASK_TYPES
from condor_dagster.methods.dataset import DATASET_ASSETS, sft_dataset
from condor_dagster.resources.vllm_engine import VLLMEngineResource, engine_loads, vllm_version

from .conftest import make_world

pytestmark = pytest.mark.engine


def test_whole_chain_on_the_real_engine(engine_settings, tmp_path, monkeypatch):
    llm = VLLMEngineResource(**engine_settings, cache_path=str(tmp_path / "cache.sqlite3"))
    world = make_world(tmp_path, monkeypatch, llm)
    loads_before = engine_loads()

    tree_run = world.materialize_tree(max_tokens=200)
    assert tree_run.success
    tree = world.read("knowledge_tree")
    assert tree.filter(pl.col("level") == 0).height == 2
    world.sync_tags()
    keys = world.tags()
    assert keys and all(PARTITION_KEY_PATTERN.match(k) for k in keys)
    llm_nodes = tree.filter(pl.col("source") == "llm")
    if llm_nodes.height:  # names the random model proposed that passed the name rules
        assert llm_nodes["lineage"].struct.field("engine").unique().to_list() == ["vllm"]

    keys = keys[:4]  # bounded CPU time: one run over up to four tags
    run = world.materialize_tags(keys)
    assert run.success
    assert engine_loads() - loads_before <= 1  # one engine for the tree run and all steps

    raw_meta = run.asset_materializations_for_node("condor__raw_questions")[0].metadata
    assert raw_meta["requests"].value == 7 * len(keys)  # all partitions in one engine call
    for key in keys:
        raw = world.read("raw_questions", key)
        assert raw.height == 21
        origin = raw["origin"].struct
        tasks = zip(origin.field("task"), origin.field("difficulty"), strict=True)
        assert Counter(tasks) == Counter((t, d) for t in TASK_TYPES for d in DIFFICULTIES)
        lineage = raw["lineage"].struct
        assert lineage.field("engine_version").unique().to_list() == [vllm_version()]
        assert (lineage.field("completion_tokens") > 0).all()
        # Structured output: a row is usable exactly when its generation stopped cleanly.
        failed = raw.filter(pl.col("drop_reason").is_in(["parse_failed", "truncated"]))
        assert (failed["lineage"].struct.field("finish_reason") == "length").all() or (
            failed["error"].is_not_null().all()
        )
        dedup = world.read("deduplicated_questions", key)
        assert sorted(dedup["id"]) == sorted(raw["id"])
        answers = world.read("draft_answers", key)
        kept = dedup.filter(pl.col("kept"))
        assert sorted(answers["parent_id"]) == sorted(kept["id"])
        assert (
            answers["truncated"] == (answers["lineage"].struct.field("finish_reason") == "length")
        ).all()

    # The export over the real engine's data: files exist and agree with the decisions table.
    exported = dg.materialize(
        DATASET_ASSETS,
        selection=[sft_dataset],
        resources=world.resources,
        instance=world.instance,
        run_config={"ops": {"sft_dataset": {"config": {"export_dir": str(tmp_path / "out")}}}},
    )
    assert exported.success
    samples = world.read("sft_dataset")
    for variant in ("refine", "void"):
        lines = (tmp_path / "out" / f"sft_{variant}.messages.jsonl").read_text("utf-8")
        kept = samples.filter(pl.col("variant") == variant)["kept"]
        assert len(lines.splitlines()) == int(kept.sum())
