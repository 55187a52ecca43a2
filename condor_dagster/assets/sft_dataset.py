"""sft_dataset: every materialized tag partition -> cross-tag dedup, filters, exports, card."""

import json
from collections import Counter
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from condor_dagster.assets.metadata import frame_metadata
from condor_dagster.core.export import (
    VARIANTS,
    cross_tag_decisions,
    dataset_card,
    export_variant,
    validate_export,
    variant_frame,
    with_keep_decisions,
    write_card,
)
from condor_dagster.core.paths import data_dir
from condor_dagster.core.prompts import load_prompt

ALL_PARTITIONS = {"allow_missing_partitions": True}


class SftDatasetConfig(dg.Config):
    """Export settings."""

    similarity_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    """Cosine similarity at or above which questions of different tags are duplicates."""
    exact_search_max: int = Field(default=200_000, ge=1)
    """Above this many questions the cross-tag search uses an approximate (IVF) index."""
    export_dir: str | None = None
    """Where the exports go; default <CONDOR_DATA_DIR>/exports."""


def _concat(frames: dict[str, pl.DataFrame]) -> pl.DataFrame | None:
    parts = [f for f in frames.values() if f is not None and f.height]
    return pl.concat(parts, how="vertical_relaxed") if parts else None


def _refine_tokens(refined: pl.DataFrame) -> int:
    rounds = refined.select(pl.col("rounds").explode()).unnest("rounds")
    if rounds.height == 0:
        return 0
    critique = int(rounds["critique_lineage"].struct.field("completion_tokens").sum())
    rewrite = int(rounds["answer_lineage"].struct.field("completion_tokens").fill_null(0).sum())
    return critique + rewrite


def build_samples(refined: pl.DataFrame, drafts: pl.DataFrame) -> pl.DataFrame:
    """One row per refined answer, with its draft's text and lineage beside it."""
    last_finish = (
        refined["rounds"]
        .list.eval(
            pl.element().struct.field("answer_lineage").struct.field("finish_reason").drop_nulls()
        )
        .list.last()
    )
    draft_cols = drafts.select(
        pl.col("id").alias("parent_id"),
        pl.col("truncated").alias("draft_truncated"),
        pl.col("lineage").struct.field("finish_reason").alias("draft_finish_reason"),
        pl.col("lineage").alias("draft_lineage"),
    )
    return (
        refined.with_columns(last_finish.alias("_rewrite_finish"))
        .join(draft_cols, on="parent_id", how="left")
        .with_columns(
            pl.coalesce("_rewrite_finish", "draft_finish_reason").alias("refine_finish_reason"),
            pl.col("tag_path").str.split(" > ").list.first().alias("root_domain"),
        )
        .drop("_rewrite_finish")
        .sort("id")
    )


@dg.asset(
    group_name="condor_export",
    kinds={"faiss", "parquet"},
    ins={
        "refined_answers": dg.AssetIn(metadata=ALL_PARTITIONS),
        "draft_answers": dg.AssetIn(metadata=ALL_PARTITIONS),
        "deduplicated_questions": dg.AssetIn(metadata=ALL_PARTITIONS),
    },
    check_specs=[dg.AssetCheckSpec("export_ready", asset="sft_dataset", blocking=True)],
)
def sft_dataset(
    context: dg.AssetExecutionContext,
    config: SftDatasetConfig,
    knowledge_tree: pl.DataFrame,
    refined_answers: dict[str, pl.DataFrame],
    draft_answers: dict[str, pl.DataFrame],
    deduplicated_questions: dict[str, pl.DataFrame],
):
    """Every sample with its keep decisions; exports both variants (refine, void) as Parquet,
    messages JSONL and ShareGPT JSONL, plus a dataset card."""
    refined = _concat(refined_answers)
    drafts = _concat(draft_answers)
    dedup = _concat(deduplicated_questions)
    if refined is None or drafts is None or dedup is None:
        raise dg.Failure(
            "no materialized refined_answers partitions yet; materialize the tag assets first "
            "(make demo, or a backfill of raw_questions..refined_answers)"
        )
    kept_questions = dedup.filter(pl.col("kept") & pl.col("embedding").is_not_null())
    embeddings = {
        qid: np.asarray(vec, dtype=np.float32)
        for qid, vec in zip(kept_questions["id"], kept_questions["embedding"], strict=True)
    }
    samples = build_samples(refined, drafts)
    samples = with_keep_decisions(
        cross_tag_decisions(
            samples, embeddings, config.similarity_threshold, config.exact_search_max
        )
    )
    problems = validate_export(samples, set(knowledge_tree["node_id"].to_list()))
    yield dg.AssetCheckResult(
        check_name="export_ready",
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": problems, "samples": samples.height},
    )
    if problems:
        raise dg.Failure(f"sft_dataset failed its export check, nothing exported: {problems}")

    out = Path(config.export_dir) if config.export_dir else data_dir() / "exports"
    files: dict[str, str] = {}
    for variant in VARIANTS:
        frame = variant_frame(samples, variant)
        for kind, path in export_variant(frame, out, variant).items():
            files[f"{variant}_{kind}"] = str(path)
    facts = {
        "tag partitions": samples["tag_id"].n_unique(),
        "models": sorted(set(drafts["lineage"].struct.field("model").to_list())),
        "prompt shas": {
            f"{name}/{lang}": load_prompt(name, lang).sha
            for name in ("questions", "answer", "critique", "refine")
            for lang in ("en", "zh")
        },
        "draft completion tokens": int(drafts["lineage"].struct.field("completion_tokens").sum()),
        "refine completion tokens (critiques + rewrites)": _refine_tokens(refined),
        "cross-tag dedup index": samples["dedup_index"][0],
        "similarity threshold": config.similarity_threshold,
    }
    card = out / "README.md"
    write_card(card, dataset_card(samples, facts))
    files["card"] = str(card)
    context.log.info(f"sft_dataset: exports written to {out}")
    drops = {v: dict(Counter(samples[f"drop_reason_{v}"].drop_nulls().to_list())) for v in VARIANTS}
    yield dg.Output(
        samples,
        metadata={
            **frame_metadata(
                samples, ["tag_path", "kept_refine", "drop_reason_refine", "question"]
            ),
            "samples_refine": int(samples["kept_refine"].sum()),
            "samples_void": int(samples["kept_void"].sum()),
            "dropped_by_reason": json.dumps(drops),
            "files": files,
            "export_dir": str(out),
        },
    )
