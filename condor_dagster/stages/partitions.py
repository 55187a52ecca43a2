"""The decorator and helpers every partitioned stage of every method shares.

A run may cover many partitions (a backfill range): each stage gathers the requests of every
partition in the run, sends them to the engine together, and returns one DataFrame per
partition, which the IO manager writes as one Parquet file each. Stages are built for a
partitions definition and upstream asset keys they are given, never a method's names.
"""

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import dagster as dg
import polars as pl

# The concurrency pool of every asset that drives the LLM engine. The instance config
# (deploy/dagster.yaml) limits it to 1 with run granularity: a run holds its engine for the
# whole run, so at most one engine-using run is in progress at a time.
GPU_POOL = "gpu"

# An input that takes every materialized partition of its upstream, missing ones skipped.
ALL_PARTITIONS = {"allow_missing_partitions": True}
# An unpartitioned input that is None until its asset is materialized.
OPTIONAL = {"allow_missing": True}


def max_partitions_per_run() -> int:
    """Partitions per backfill run (CONDOR_MAX_PARTITIONS_PER_RUN, default 25): a 1,000-tag
    backfill is 40 runs, each loading the engine once and keeping its batch full."""
    value = os.environ.get("CONDOR_MAX_PARTITIONS_PER_RUN", "25")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"CONDOR_MAX_PARTITIONS_PER_RUN must be a positive integer, got {value!r}")
    return int(value)


def multi_run_backfill() -> dg.BackfillPolicy:
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=max_partitions_per_run())


T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def partitioned_stage(
    *,
    name: str,
    key_prefix: Sequence[str],
    partitions_def: dg.PartitionsDefinition,
    group: str,
    kinds: set[str],
    code_version: str,
    checks: Sequence[str] = (),
    ins: Mapping[str, dg.AssetKey] | None = None,
    pool: str | None = None,
    required_resource_keys: set[str] | None = None,
    description: str | None = None,
) -> Callable[[F], dg.AssetsDefinition]:
    """@dg.asset for a stage partitioned by `partitions_def`: key `<key_prefix>/<name>`,
    multi-partition backfill runs, the method's group, inputs bound to `ins` (parameter name ->
    upstream key), in-asset checks named `checks` (the function yields their results), and
    the concurrency `pool` (GPU_POOL for the stages that call the LLM)."""
    key = dg.AssetKey([*key_prefix, name])

    def decorate(fn: F) -> dg.AssetsDefinition:
        return dg.asset(
            name=name,
            key_prefix=list(key_prefix),
            ins={param: dg.AssetIn(key=upstream) for param, upstream in (ins or {}).items()},
            partitions_def=partitions_def,
            backfill_policy=multi_run_backfill(),
            group_name=group,
            kinds=kinds,
            code_version=code_version,
            check_specs=[dg.AssetCheckSpec(check, asset=key) for check in checks],
            pool=pool,
            required_resource_keys=required_resource_keys,
            description=description,
        )(fn)

    return decorate


def inputs_by_partition(context: dg.AssetExecutionContext, value: Any) -> dict[str, Any]:
    """An upstream partitioned input as {partition_key: value}, for one or many partitions."""
    keys = list(context.partition_keys)
    if isinstance(value, Mapping) and (len(keys) > 1 or set(value) == set(keys)):
        return dict(value)
    return {keys[0]: value}


def output_for_partitions(
    context: dg.AssetExecutionContext, frames: Mapping[str, pl.DataFrame]
) -> pl.DataFrame | dict[str, pl.DataFrame]:
    """What the IO manager expects (the frame itself for one partition, a dict for several),
    with each partition's own row count recorded on its materialization."""
    if len(frames) > 1:
        for key, frame in frames.items():
            context.add_asset_metadata(
                {"dagster/row_count": frame.height, "dagster/partition_row_count": frame.height},
                partition_key=key,
            )
    if len(frames) == 1:
        return next(iter(frames.values()))
    return dict(frames)


def run_started_at(context: dg.AssetExecutionContext) -> dt.datetime:
    """One timestamp per step, so every row of a run shares it."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def llm_for_role(context: dg.AssetExecutionContext, role: str) -> Any:
    """The LLM resource bound to `role` (a resource key: llm, label, score, polish)."""
    return getattr(context.resources, role)
