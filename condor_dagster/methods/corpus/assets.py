"""corpus/documents: the documents of each corpus shard, one Parquet file per partition."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from condor_dagster.core.drop_reasons import drop_metadata
from condor_dagster.core.rows import rows_to_frame
from condor_dagster.methods.corpus.partitions import GROUP, KEY_PREFIX, corpus_shards
from condor_dagster.methods.corpus.records import DocumentRow
from condor_dagster.methods.corpus.resource import CorpusResource
from condor_dagster.stages.metadata import partitioned_frame_metadata
from condor_dagster.stages.partitions import output_for_partitions, partitioned_stage

PREVIEW = ("source", "position", "language", "chars", "drop_reason", "title", "text")


@partitioned_stage(
    name="documents",
    key_prefix=KEY_PREFIX,
    partitions_def=corpus_shards,
    group=GROUP,
    kinds={"parquet"},
    code_version="corpus-documents-v1",
    checks=["not_empty"],
    required_resource_keys={"corpus"},
    description="Every document of the shard (dropped ones with their reason and detail).",
)
def documents(context: dg.AssetExecutionContext) -> Iterator[dg.Output[Any] | dg.AssetCheckResult]:
    """Reads each shard of the run from the corpus folder."""
    corpus: CorpusResource = context.resources.corpus
    rows = {key: corpus.read(key) for key in context.partition_keys}
    frames = {key: rows_to_frame(shard_rows, DocumentRow) for key, shard_rows in rows.items()}
    everything = [row for shard_rows in rows.values() for row in shard_rows]
    no_usable = [key for key, shard_rows in rows.items() if all(r.drop_reason for r in shard_rows)]
    yield dg.Output(
        output_for_partitions(context, frames),
        metadata={
            **partitioned_frame_metadata(frames, list(PREVIEW)),
            **drop_metadata(row.drop_reason for row in everything),
            "documents": len(everything),
            "characters": sum(row.chars for row in everything),
            "sources": sorted({row.source for row in everything}),
        },
    )
    yield dg.AssetCheckResult(
        check_name="not_empty",
        passed=not no_usable,
        metadata={"shards_without_usable_document": no_usable},
    )


CORPUS_ASSETS = [documents]
