"""tags_sensor: keeps the "tags" partitions in step with the latest knowledge_tree.

It adds new leaf tags, never re-requests existing ones, reports (never deletes) tags that left
the tree, and, when `CONDOR_SENSOR_REQUESTS_RUNS` is on (default), requests runs for just the
new partitions: an incremental backfill, in ranges of at most max_partitions_per_run tags.
"""

import os

import dagster as dg
import polars as pl

from condor_dagster.methods.condor.partitions import key, tags_partitions
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.stages.partitions import max_partitions_per_run

# The per-tag assets a new tag needs; sft_dataset (unpartitioned) is left to the user.
NEW_TAG_ASSETS = [
    key(name)
    for name in (
        "raw_questions",
        "deduplicated_questions",
        "draft_answers",
        "refined_answers",
        "refine_quality",
        "sft_candidates",
    )
]
TREE = key("knowledge_tree")


def leaf_tag_ids(tree: pl.DataFrame) -> list[str]:
    """Leaf node ids of a knowledge_tree frame, in tree order (stable partition order)."""
    return tree.filter(pl.col("is_leaf"))["node_id"].to_list()


def tag_changes(leaves: list[str], existing: list[str]) -> tuple[list[str], list[str]]:
    """(new tags in tree order, tags no longer in the tree)."""
    known = set(existing)
    current = set(leaves)
    return [t for t in leaves if t not in known], [t for t in existing if t not in current]


def partition_ranges(keys: list[str], size: int) -> list[tuple[str, str]]:
    """Consecutive (first, last) key ranges of at most `size` keys; new dynamic partitions are
    appended in order, so each range covers exactly the keys it lists."""
    return [(keys[i], keys[min(i + size, len(keys)) - 1]) for i in range(0, len(keys), size)]


@dg.sensor(
    # CONDOR_TAGS_SENSOR_INTERVAL_S: seconds between evaluations (tests use a few).
    minimum_interval_seconds=int(os.environ.get("CONDOR_TAGS_SENSOR_INTERVAL_S", "30")),
    asset_selection=NEW_TAG_ASSETS,
    description="Adds the latest knowledge_tree's new leaf tags as partitions and backfills them.",
)
def tags_sensor(
    context: dg.SensorEvaluationContext, io_manager: dg.ResourceParam[ParquetIOManager]
) -> dg.SensorResult | dg.SkipReason:
    # Read through the IO manager's store: its base_dir (a folder, an fsspec URL) is the one
    # the assets were written to.
    store = io_manager.store()
    if not store.exists(TREE.path):
        where = store.path(TREE.path)
        return dg.SkipReason(f"no knowledge_tree yet at {where}; materialize condor/knowledge_tree")
    tree = store.read(TREE.path, columns=["node_id", "is_leaf"])
    existing = list(context.instance.get_dynamic_partitions(tags_partitions.name or "tags"))
    new, removed = tag_changes(leaf_tag_ids(tree), existing)
    if removed:
        # Their files and history stay: deleting data is the user's decision.
        context.log.warning(
            f"{len(removed)} tag partitions are no longer leaves of knowledge_tree and were kept: "
            f"{removed[:20]}{' ...' if len(removed) > 20 else ''}"
        )
    if not new:
        return dg.SkipReason(f"no new tags ({len(existing)} known, {len(removed)} removed)")
    runs = []
    if os.environ.get("CONDOR_SENSOR_REQUESTS_RUNS", "1") != "0":
        for first, last in partition_ranges(new, max_partitions_per_run()):
            runs.append(
                dg.RunRequest(
                    run_key=f"new-tags:{first}:{last}",
                    asset_selection=NEW_TAG_ASSETS,
                    tags={
                        "dagster/asset_partition_range_start": first,
                        "dagster/asset_partition_range_end": last,
                    },
                )
            )
    context.log.info(f"adding {len(new)} new tags; requesting {len(runs)} runs")
    return dg.SensorResult(
        dynamic_partitions_requests=[tags_partitions.build_add_request(new)],
        run_requests=runs,
    )


def sync_tags(instance: dg.DagsterInstance, io_manager: ParquetIOManager) -> dg.SensorResult:
    """Evaluate tags_sensor once and apply its partition requests, as the daemon would (for
    `condor demo` and tests, which run without a daemon); its run requests are not launched."""
    context = dg.build_sensor_context(instance=instance, resources={"io_manager": io_manager})
    result = tags_sensor(context)
    if isinstance(result, dg.SkipReason):  # nothing new (a second demo on the same home)
        return dg.SensorResult(skip_reason=result)
    if not isinstance(result, dg.SensorResult):
        raise RuntimeError(f"tags_sensor returned {result!r}, not a SensorResult")
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions("tags", list(request.partition_keys or []))
    return result
