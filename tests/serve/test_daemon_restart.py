"""Fault: the daemon killed (SIGKILL) while a backfill is in progress, then started again;
the backfill still finishes with every partition materialized."""

from __future__ import annotations

import signal
from pathlib import Path

import polars as pl
import pytest

from condor_dagster.core.tag_ids import node_id

from .ui import SMALL_TAG_RUN_CONFIG, TAG_ASSETS, DagsterUI, tree_run_config, write_taxonomy

pytestmark = [pytest.mark.server, pytest.mark.timeout(900)]


def test_backfill_survives_a_daemon_restart(condor_stack: DagsterUI, tmp_path: Path):
    ui = condor_stack
    leaves = ["Hiking", "Sailing"]
    taxonomy = write_taxonomy(tmp_path / "taxonomy.yaml", leaves, root="Travel")
    tree_run = ui.launch_job("knowledge_tree_job", tree_run_config(taxonomy))
    assert ui.wait_run(tree_run, timeout_s=180) == "SUCCESS"
    ui.start_sensor("tags_sensor")
    keys = [node_id(["Travel", leaf]) for leaf in leaves]
    ui.wait_partitions(keys, timeout_s=90)

    backfill_id = ui.launch_backfill(TAG_ASSETS, keys, SMALL_TAG_RUN_CONFIG)
    ui.wait_for(
        "a run of the backfill to start",
        lambda: any(r["status"] == "STARTED" for r in ui.backfill(backfill_id).runs),
        timeout_s=180,
    )
    assert ui.backfill(backfill_id).status == "REQUESTED"  # still in progress
    ui.stack.restart_daemon(signal.SIGKILL)

    backfill = ui.wait_backfill(backfill_id, timeout_s=420)
    assert backfill.status == "COMPLETED_SUCCESS", backfill
    assert [r["status"] for r in backfill.runs] == ["SUCCESS"] * len(keys)
    statuses = ui.partition_statuses(TAG_ASSETS)
    data = Path(ui.stack.env["CONDOR_DATA_DIR"]) / "assets"
    for asset in TAG_ASSETS:
        assert set(keys) <= set(statuses[asset]["materialized"]), (asset, statuses[asset])
        for key in keys:
            assert pl.read_parquet(data / "condor" / asset / f"{key}.parquet").schema, (asset, key)
