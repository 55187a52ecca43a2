"""The corpus stage's asset keys, group and "corpus_shards" partitions (one per shard)."""

import dagster as dg

KEY_PREFIX = ("corpus",)
GROUP = "corpus"

corpus_shards = dg.DynamicPartitionsDefinition(name="corpus_shards")


def key(name: str) -> dg.AssetKey:
    """corpus/<name>."""
    return dg.AssetKey([*KEY_PREFIX, name])
