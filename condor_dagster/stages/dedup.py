"""The shared dedup stage: exact, then embedding/FAISS near-duplicate removal, per partition.

Every input row appears in the output with its decision; embeddings are stored so the
cross-method pass of sft_dataset reuses them instead of embedding again.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from condor_dagster.core.dedup_frame import dedup_frame
from condor_dagster.core.prompts import code_version
from condor_dagster.core.rows import drop_metadata
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.stages.metadata import partitioned_frame_metadata
from condor_dagster.stages.partitions import (
    inputs_by_partition,
    output_for_partitions,
    partitioned_stage,
)


class DedupConfig(dg.Config):
    """Near-duplicate settings."""

    similarity_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    """Cosine similarity at or above which a text is a near-duplicate of an earlier one."""


def _code_version() -> str:
    return code_version(["dedup-v1"], DedupConfig().model_dump())


def dedup_stage(
    *,
    key_prefix: Sequence[str],
    partitions_def: dg.PartitionsDefinition,
    upstream: dg.AssetKey,
    group: str,
    name: str = "deduplicated_questions",
    preview: Sequence[str] = ("kept", "drop_reason", "similarity", "text"),
) -> dg.AssetsDefinition:
    """A dedup asset over `upstream`'s rows (the row contract plus `text` and `drop_reason`)."""

    @partitioned_stage(
        name=name,
        key_prefix=key_prefix,
        partitions_def=partitions_def,
        group=group,
        ins={"upstream": upstream},
        kinds={"faiss", "parquet"},
        code_version=_code_version(),
        checks=["keeps_questions"],
    )
    def deduplicated(
        context: dg.AssetExecutionContext,
        config: DedupConfig,
        embeddings: SentenceTransformerEmbeddings,
        upstream: Any,
    ) -> Iterator[dg.Output[Any] | dg.AssetCheckResult]:
        """Every input row with kept / dropped, duplicate_of, similarity and its embedding."""
        raws = inputs_by_partition(context, upstream)
        frames = {
            key: dedup_frame(
                raws[key], embeddings.embed, embeddings.model_id(), config.similarity_threshold
            )
            for key in context.partition_keys
        }
        no_kept = [k for k, f in frames.items() if not f["kept"].any()]
        reasons = [r for f in frames.values() for r in f["drop_reason"].to_list()]
        yield dg.Output(
            output_for_partitions(context, frames),
            metadata={
                **partitioned_frame_metadata(frames, list(preview)),
                **drop_metadata(reasons),
                "similarity_threshold": config.similarity_threshold,
                "embedding_model": embeddings.model_id(),
            },
        )
        yield dg.AssetCheckResult(
            check_name="keeps_questions",
            passed=not no_kept,
            metadata={"partitions_with_no_kept_question": no_kept},
        )

    return deduplicated
