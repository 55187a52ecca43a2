"""deduplicated_questions[tag]: exact, then embedding/FAISS near-duplicate removal, per tag.

Every input row appears in the output with its decision; embeddings are stored so the cross-tag
pass at export reuses them instead of embedding again.
"""

from collections import Counter

import dagster as dg
from pydantic import Field

from condor_dagster.assets.metadata import partitioned_frame_metadata
from condor_dagster.assets.partitions import (
    inputs_by_partition,
    output_for_partitions,
    per_tag_asset,
)
from condor_dagster.core.prompts import code_version
from condor_dagster.core.question_dedup import dedup_question_frame
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings


class DedupConfig(dg.Config):
    """Near-duplicate settings."""

    similarity_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    """Cosine similarity at or above which a question is a near-duplicate of an earlier one."""


def _code_version() -> str:
    return code_version(["dedup-v1"], DedupConfig().model_dump())


@per_tag_asset(kinds={"faiss", "parquet"}, code_version=_code_version(), checks=["keeps_questions"])
def deduplicated_questions(
    context: dg.AssetExecutionContext,
    config: DedupConfig,
    embeddings: SentenceTransformerEmbeddings,
    raw_questions,
):
    """Every raw question with kept / dropped, duplicate_of, similarity and its embedding."""
    raws = inputs_by_partition(context, raw_questions)
    frames = {
        key: dedup_question_frame(
            raws[key], embeddings.embed, embeddings.model_id(), config.similarity_threshold
        )
        for key in context.partition_keys
    }
    reasons: Counter[str] = Counter()
    for frame in frames.values():
        reasons.update(frame["drop_reason"].fill_null("kept").to_list())
    no_kept = [k for k, f in frames.items() if not f["kept"].any()]
    yield dg.Output(
        output_for_partitions(frames),
        metadata={
            **partitioned_frame_metadata(
                frames, ["tag_path", "difficulty", "kept", "drop_reason", "similarity", "text"]
            ),
            "kept": reasons.get("kept", 0),
            "dropped_by_reason": {k: v for k, v in reasons.items() if k != "kept"},
            "similarity_threshold": config.similarity_threshold,
            "embedding_model": embeddings.model_id(),
        },
    )
    yield dg.AssetCheckResult(
        check_name="keeps_questions",
        passed=not no_kept,
        metadata={"partitions_with_no_kept_question": no_kept},
    )
