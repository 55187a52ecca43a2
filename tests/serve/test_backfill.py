"""Backfills the way a user runs them: webserver + daemon over PostgreSQL, the UI's GraphQL
calls, the tags sensor, the gpu pool. The LLM is the session's real `vllm serve`."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from condor_dagster.core.tag_ids import node_id

from .ui import (
    SMALL_TAG_RUN_CONFIG,
    TAG_ASSETS,
    DagsterUI,
    asset_path,
    tree_run_config,
    write_taxonomy,
)

pytestmark = [pytest.mark.server, pytest.mark.timeout(900)]

# The assets that call the LLM engine; deduplicated_questions only embeds, sft_dataset reads.
ENGINE_ASSETS = [
    "knowledge_tree",
    "raw_questions",
    "draft_answers",
    "refined_answers",
    "refine_quality",
]
STEP_EVENTS = ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE")


def tag_id(*path: str) -> str:
    return node_id(["Healthcare", *path])


def partition_file(ui: DagsterUI, asset: str, key: str) -> Path:
    return Path(ui.stack.env["CONDOR_DATA_DIR"]).joinpath(
        "assets", *asset_path(asset), f"{key}.parquet"
    )


def materialize_tree(ui: DagsterUI, taxonomy: Path) -> None:
    run_id = ui.launch_job("knowledge_tree_job", tree_run_config(taxonomy))
    assert ui.wait_run(run_id, timeout_s=180) == "SUCCESS"


def gpu_step_intervals(ui: DagsterUI, run_ids: list[str]) -> list[tuple[float, float, str]]:
    """(start, end, run:step) of every step in the gpu pool, from the runs' event records."""
    from dagster import DagsterEventType

    members = {  # step keys: the asset key path joined by "__"
        "__".join(asset_path(asset))
        for asset, pools in ui.pools(ENGINE_ASSETS).items()
        if "gpu" in pools
    }
    types = {DagsterEventType(t) for t in STEP_EVENTS}
    intervals = []
    with ui.stack.instance() as instance:
        for run_id in run_ids:
            starts: dict[str, float] = {}
            for entry in instance.all_logs(run_id, of_type=types):
                step = entry.step_key
                if step not in members:
                    continue
                if entry.dagster_event_type == DagsterEventType.STEP_START:
                    starts[step] = entry.timestamp
                else:
                    intervals.append((starts.pop(step), entry.timestamp, f"{run_id}:{step}"))
            assert not starts, f"run {run_id}: steps started but never ended: {starts}"
    return sorted(intervals)


def assert_no_overlap(intervals: list[tuple[float, float, str]]) -> None:
    for (_, end, first), (start, _, second) in itertools.pairwise(intervals):
        assert start >= end, f"gpu pool steps overlap: {first} ended {end}, {second} began {start}"


def materializations_per_partition(ui: DagsterUI, asset: str) -> Counter[str]:
    import dagster as dg

    with ui.stack.instance() as instance:
        records = instance.fetch_materializations(
            dg.AssetKey(asset_path(asset)), limit=1000
        ).records
    return Counter(r.partition_key for r in records)


def run_partitions(run: dict[str, Any]) -> list[str]:
    tags = {t["key"]: t["value"] for t in run["tags"]}
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    return [tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]]


def test_backfill_of_tag_partitions_then_missing_only(condor_stack: DagsterUI, tmp_path: Path):
    ui = condor_stack
    # The instance the webserver and daemon share: the gpu pool's limit is 1, and every
    # engine-using asset belongs to it (dedup only embeds, sft_dataset only reads).
    assert ui.pool_limits().get("gpu") == 1
    pools = ui.pools([*TAG_ASSETS, "knowledge_tree", "sft_dataset", "engine_smoke_test"])
    assert {a for a, p in pools.items() if p == ["gpu"]} == {*ENGINE_ASSETS, "engine_smoke_test"}
    assert not pools["deduplicated_questions"] and not pools["sft_dataset"]

    leaves = ["Nutrition", "Sleep"]
    taxonomy = write_taxonomy(tmp_path / "taxonomy.yaml", leaves)
    materialize_tree(ui, taxonomy)
    ui.start_sensor("tags_sensor")
    keys = [tag_id(leaf) for leaf in leaves]
    ui.wait_partitions(keys, timeout_s=90)

    backfill_id = ui.launch_backfill(TAG_ASSETS, keys, SMALL_TAG_RUN_CONFIG)
    backfill = ui.wait_backfill(backfill_id, timeout_s=420)
    assert backfill.status == "COMPLETED_SUCCESS", backfill
    # One partition per run: two runs, queued together, competing for the gpu pool.
    assert [r["status"] for r in backfill.runs] == ["SUCCESS"] * len(keys)
    assert sorted(p for r in backfill.runs for p in set(run_partitions(r))) == sorted(keys)
    for asset in TAG_ASSETS:
        for key in keys:
            frame = pl.read_parquet(partition_file(ui, asset, key))
            assert frame.height > 0 or asset != "raw_questions", (asset, key)
            assert set(frame["partition_key"]) <= {key}, (asset, key)
        statuses = ui.partition_statuses([asset])[asset]
        assert set(keys) <= set(statuses["materialized"]), (asset, statuses)
    assert_no_overlap(gpu_step_intervals(ui, [r["runId"] for r in backfill.runs]))

    # A new trending tag: the sensor adds it, and "missing" is that partition alone.
    new_key = tag_id("Telemedicine")
    write_taxonomy(taxonomy, leaves, custom=["Telemedicine"])
    materialize_tree(ui, taxonomy)
    ui.wait_partitions([*keys, new_key], timeout_s=90)
    missing = ui.missing_partitions(TAG_ASSETS)
    assert missing == [new_key]

    before = {asset: materializations_per_partition(ui, asset) for asset in TAG_ASSETS}
    second = ui.wait_backfill(ui.launch_backfill(TAG_ASSETS, missing, SMALL_TAG_RUN_CONFIG), 300)
    assert second.status == "COMPLETED_SUCCESS", second
    assert [r["status"] for r in second.runs] == ["SUCCESS"]
    assert set(run_partitions(second.runs[0])) == {new_key}
    for asset in TAG_ASSETS:
        after = materializations_per_partition(ui, asset)
        # Exactly the new partition ran: one new materialization, the others untouched.
        assert after - before[asset] == Counter({new_key: 1}), asset
        assert partition_file(ui, asset, new_key).exists()
    assert ui.missing_partitions(TAG_ASSETS) == []
    assert_no_overlap(gpu_step_intervals(ui, [r["runId"] for r in backfill.runs + second.runs]))
