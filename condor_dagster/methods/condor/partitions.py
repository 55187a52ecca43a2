"""Condor's asset keys, group and "tags" partitions (one per leaf of the knowledge tree)."""

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from condor_dagster.stages.partitions import partitioned_stage

METHOD = "condor"
KEY_PREFIX = (METHOD,)
GROUP = METHOD

tags_partitions = dg.DynamicPartitionsDefinition(name="tags")


def key(name: str) -> dg.AssetKey:
    """condor/<name>."""
    return dg.AssetKey([*KEY_PREFIX, name])


def tag_stage(
    name: str, *, ins: Mapping[str, str] | None = None, **options: Any
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """`partitioned_stage` for a Condor stage partitioned by tag; `ins` names Condor assets."""
    return partitioned_stage(
        name=name,
        key_prefix=KEY_PREFIX,
        partitions_def=tags_partitions,
        group=GROUP,
        ins={param: key(asset) for param, asset in (ins or {}).items()},
        **options,
    )
