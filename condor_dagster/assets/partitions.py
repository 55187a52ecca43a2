"""The "tags" partitions and the helpers every per-tag asset shares.

A run may cover many tag partitions (a backfill range): each asset gathers the requests of every
partition in the run, sends them to the engine together, and returns one DataFrame per
partition, which the IO manager writes as one Parquet file each.
"""

import datetime as dt
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import dagster as dg

tags_partitions = dg.DynamicPartitionsDefinition(name="tags")

# The concurrency pool of every asset that drives the LLM engine. The instance config
# (deploy/dagster.yaml) limits it to 1 with run granularity: a run holds its engine for the
# whole run, so at most one engine-using run is in progress at a time.
GPU_POOL = "gpu"


def max_partitions_per_run() -> int:
    """Partitions per backfill run (CONDOR_MAX_PARTITIONS_PER_RUN, default 25): a 1,000-tag
    backfill is 40 runs, each loading the engine once and keeping its batch full."""
    value = os.environ.get("CONDOR_MAX_PARTITIONS_PER_RUN", "25")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"CONDOR_MAX_PARTITIONS_PER_RUN must be a positive integer, got {value!r}")
    return int(value)


def tags_backfill_policy() -> dg.BackfillPolicy:
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=max_partitions_per_run())


T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def per_tag_asset(
    *,
    kinds: set[str],
    code_version: str,
    checks: list[str],
    group: str = "condor_void",
    pool: str | None = None,
) -> Callable[[F], Any]:
    """@dg.asset for a stage partitioned by tag: multi-partition backfill runs, the Condor
    group, in-asset checks named `checks` (the function yields their results), and the
    concurrency `pool` (GPU_POOL for the stages that call the LLM)."""

    def decorate(fn: F) -> Any:
        return dg.asset(
            partitions_def=tags_partitions,
            backfill_policy=tags_backfill_policy(),
            group_name=group,
            kinds=kinds,
            code_version=code_version,
            check_specs=[dg.AssetCheckSpec(name, asset=fn.__name__) for name in checks],
            pool=pool,
        )(fn)

    return decorate


def inputs_by_partition(context: dg.AssetExecutionContext, value: Any) -> dict[str, Any]:
    """An upstream partitioned input as {partition_key: value}, for one or many partitions."""
    keys = list(context.partition_keys)
    if isinstance(value, Mapping) and len(keys) > 1:
        return dict(value)
    return {keys[0]: value}


def output_for_partitions(frames: Mapping[str, T]) -> T | dict[str, T]:
    """What the IO manager expects: the object itself for one partition, a dict for several."""
    if len(frames) == 1:
        return next(iter(frames.values()))
    return dict(frames)


def run_started_at(context: dg.AssetExecutionContext) -> dt.datetime:
    """One timestamp per step, so every row of a run shares it."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
