"""AugCon's asset keys and group; its stages are partitioned by the corpus shards."""

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from condor_dagster.methods.augcon.records import METHOD
from condor_dagster.methods.corpus.partitions import corpus_shards
from condor_dagster.stages.partitions import partitioned_stage

KEY_PREFIX = (METHOD,)
GROUP = METHOD


def key(name: str) -> dg.AssetKey:
    """augcon/<name>."""
    return dg.AssetKey([*KEY_PREFIX, name])


def shard_stage(
    name: str, *, ins: Mapping[str, dg.AssetKey] | None = None, **options: Any
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """`partitioned_stage` for an AugCon stage partitioned by corpus shard."""
    return partitioned_stage(
        name=name,
        key_prefix=KEY_PREFIX,
        partitions_def=corpus_shards,
        group=GROUP,
        ins=ins,
        **options,
    )
