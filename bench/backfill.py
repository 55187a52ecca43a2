"""backfill_runs_for_1000_tags: the runs a real 1,000-partition backfill of
condor/raw_questions launches with the assets' default backfill policy.

A temporary Dagster instance with a queued run coordinator (runs are created and queued, never
executed) loads the project's assets in process; the backfill daemon's own iteration is run
until the backfill has requested every partition, then the runs it created are counted.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._core.test_utils import instance_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration

from bench.core import Context, Result
from condor_dagster.methods.condor.assets import CONDOR_ASSETS, raw_questions
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.scripted_llm import ScriptedLLMResource

# The project's assets (and so their backfill policy); resources that need no model, since
# no run executes here.
defs = dg.Definitions(
    assets=CONDOR_ASSETS,
    resources={
        "llm": ScriptedLLMResource(use_cache=False),
        "embeddings": SentenceTransformerEmbeddings(),
        "io_manager": ParquetIOManager(),
    },
    executor=dg.in_process_executor,
)


def _queueing_instance(home: str) -> Any:
    """A temporary instance whose run coordinator only queues, with one SQLite event log (the
    default opens a database per run) on tmpfs where there is one: per-event fsyncs would
    time the disk, not the backfill."""
    return instance_for_test(
        temp_dir=home,
        overrides={
            "run_coordinator": {
                "module": "dagster._core.run_coordinator",
                "class": "QueuedRunCoordinator",
            },
            "event_log_storage": {
                "module": "dagster._core.storage.event_log",
                "class": "ConsolidatedSqliteEventLogStorage",
                "config": {"base_dir": str(Path(home) / "events")},
            },
        },
    )


def count_backfill_runs(tags: int) -> tuple[int, int]:
    """(runs launched, daemon iterations) for a backfill of condor/raw_questions over `tags`
    tags."""
    keys = [f"bench-tag-{i:05d}" for i in range(tags)]
    logger = logging.getLogger("bench.backfill")
    shm = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as home,
        _queueing_instance(home) as instance,
    ):
        instance.add_dynamic_partitions("tags", keys)
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="bench.backfill", attribute="defs"),
            location_name="condor",
        )
        target = InProcessWorkspaceLoadTarget(origin)
        with WorkspaceProcessContext(instance, target) as workspace:
            backfill = PartitionBackfill.from_asset_partitions(
                backfill_id="benchbackfill",
                asset_graph=workspace.create_request_context().asset_graph,
                partition_names=keys,
                asset_selection=[raw_questions.key],
                backfill_timestamp=time.time(),
                tags={},
                dynamic_partitions_store=instance,
                all_partitions=False,
                title=None,
                description=None,
                run_config=None,
            )
            instance.add_backfill(backfill)
            iterations = 0
            # Each daemon tick requests what it can; stop once every partition is requested
            # (the backfill then waits for its runs, which never execute here).
            while iterations < 50:
                iterations += 1
                for error in execute_backfill_iteration(workspace, logger):
                    if error is not None:
                        raise RuntimeError(f"backfill iteration failed: {error.to_string()}")
                current = instance.get_backfill(backfill.backfill_id)
                assert current is not None
                data = current.asset_backfill_data
                if current.status != BulkActionStatus.REQUESTED or (
                    data is not None
                    and data.all_requested_partitions_marked_as_materialized_or_failed()
                ):
                    break
                requested = data.requested_subset.num_partitions_and_non_partitioned_assets
                if requested >= tags:
                    break
            runs = instance.get_runs_count(RunsFilter(tags={BACKFILL_ID_TAG: backfill.backfill_id}))
            return runs, iterations


def run(ctx: Context) -> dict[str, Result]:
    tags = ctx.sizes.backfill_tags
    ctx.log(
        f"backfill: {ctx.reps} x a {tags}-partition backfill of condor/raw_questions (runs queued)"
    )
    counts, iterations, seconds = [], [], []
    for _ in range(ctx.reps):
        began = time.perf_counter()
        runs, ticks = count_backfill_runs(tags)
        seconds.append(time.perf_counter() - began)
        counts.append(float(runs))
        iterations.append(ticks)
    return {
        "backfill_runs_for_1000_tags": Result(
            counts,
            note=f"{tags} partitions, default policy; {iterations[0]} daemon iteration(s)",
            detail={"tags": tags, "daemon_iterations": iterations, "seconds": seconds},
        )
    }
