"""augcon/filtered_questions: the tree's usable questions scored by the query scorer, then per
root chunk kept in score order unless ROUGE-L says a kept one already asks it, up to the quota."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.core.drop_reasons import drop_metadata
from condor_dagster.core.prompts import code_version
from condor_dagster.core.rows import frames_by_partition
from condor_dagster.methods.augcon.filtered_rows import filtered_question_rows, usable_nodes
from condor_dagster.methods.augcon.partitions import key, shard_stage
from condor_dagster.methods.augcon.records import AugconOrigin, FilteredQuestionRow
from condor_dagster.methods.augcon.scorer_assets import scorer_dir
from condor_dagster.resources.query_scorer import QueryScorerResource
from condor_dagster.stages.metadata import partitioned_frame_metadata
from condor_dagster.stages.partitions import inputs_by_partition, output_for_partitions


class FilteredQuestionsConfig(dg.Config):
    """The ROUGE-L filter and its quota check."""

    rouge_threshold: float = Field(default=0.7, gt=0.0, le=1.0)
    """A question whose ROUGE-L F-measure against a kept one exceeds this is a duplicate."""
    min_quota_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    """The quota_met check warns when fewer chunks than this share keep their quota."""


def quota_figures(frames: dict[str, pl.DataFrame], chunks: dict[str, pl.DataFrame]) -> dict:
    """Chunks that kept their full quota, overall and per shard."""
    per_shard: dict[str, float] = {}
    met_total = chunk_total = 0
    for shard, chunk_frame in chunks.items():
        kept = frames[shard].filter(pl.col("drop_reason").is_null())
        counts = kept.group_by(pl.col("origin").struct.field("chunk_id")).len()
        got = dict(zip(counts["chunk_id"].to_list(), counts["len"].to_list(), strict=True))
        met = sum(got.get(r["id"], 0) >= r["quota"] for r in chunk_frame.iter_rows(named=True))
        per_shard[shard] = round(met / max(chunk_frame.height, 1), 4)
        met_total, chunk_total = met_total + met, chunk_total + chunk_frame.height
    return {
        "chunks_meeting_quota": met_total,
        "quota_met_rate": round(met_total / max(chunk_total, 1), 4),
        "quota_met_rate_by_shard": per_shard,
    }


@shard_stage(
    "filtered_questions",
    ins={"tree": key("context_tree"), "chunks": key("chunks"), "scorer": key("query_scorer")},
    kinds={"pytorch", "parquet"},
    code_version=code_version(["augcon-filter-v1"], FilteredQuestionsConfig().model_dump()),
    checks=["not_empty", "quota_met"],
    description="Usable tree questions scored, ROUGE-L filtered and cut at each chunk's quota.",
)
def filtered_questions(
    context: dg.AssetExecutionContext,
    config: FilteredQuestionsConfig,
    query_scorer: QueryScorerResource,
    tree: Any,
    chunks: Any,
    scorer: pl.DataFrame,
) -> Iterator[dg.Output[Any] | dg.AssetCheckResult]:
    """Scores every usable question of the run in one batched pass, then filters per chunk."""
    keys = list(context.partition_keys)
    trees, chunk_frames = inputs_by_partition(context, tree), inputs_by_partition(context, chunks)
    nodes = {k: usable_nodes(trees[k].to_dicts()) for k in keys}
    pairs = [(n["origin"]["context"], n["text"]) for k in keys for n in nodes[k]]
    model_dir = scorer_dir(scorer)
    context.log.info(f"filtered_questions: scoring {len(pairs)} questions with {model_dir}")
    scores = iter(query_scorer.score(model_dir, pairs))
    rows = []
    for k in keys:
        quotas = dict(zip(chunk_frames[k]["id"], chunk_frames[k]["quota"], strict=True))
        shard_scores = [next(scores) for _ in nodes[k]]
        rows += filtered_question_rows(
            nodes[k], shard_scores, quotas=quotas, threshold=config.rouge_threshold
        )
    frames = frames_by_partition(rows, keys, FilteredQuestionRow, origin=AugconOrigin)
    figures = quota_figures(frames, chunk_frames)
    empty = [k for k, f in frames.items() if f.filter(pl.col("drop_reason").is_null()).height == 0]
    yield dg.Output(
        output_for_partitions(context, frames),
        metadata={
            **partitioned_frame_metadata(frames, ["score", "rank", "drop_reason", "text"]),
            **drop_metadata(r.drop_reason for r in rows),
            **figures,
            "scorer_dir": dg.MetadataValue.path(model_dir),
            "scored": len(pairs),
        },
    )
    yield dg.AssetCheckResult(
        check_name="not_empty", passed=not empty, metadata={"shards_without_kept_question": empty}
    )
    yield dg.AssetCheckResult(
        check_name="quota_met",
        passed=figures["quota_met_rate"] >= config.min_quota_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quota_met_rate": figures["quota_met_rate"], "bound": config.min_quota_rate},
    )
