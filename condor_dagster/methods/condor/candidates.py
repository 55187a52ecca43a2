"""Condor's candidates, pure part: each refined answer as two rows of the long format, the
refined answer (variant "refine", Condor Refine) and its draft (variant "void", Condor Void),
so the paper's comparison comes out of one question set."""

from __future__ import annotations

import polars as pl

from condor_dagster.core.candidates import CANDIDATE_COLUMNS

VARIANTS = ("refine", "void")
# Condor's own columns after the contract's: the tag, the root domain, the refinement record.
EXTRA_COLUMNS = ("tag_id", "root_domain", "rounds", "rounds_run", "stop_reason")


def _used_rewrite_lineage() -> pl.Expr:
    """The lineage of the last round whose rewrite became the answer (null: none did)."""
    rounds = pl.col("rounds").list.eval(
        pl.element().filter(pl.element().struct.field("answer").is_not_null())
    )
    return rounds.list.last().struct.field("answer_lineage")


def condor_candidates(refined: pl.DataFrame, drafts: pl.DataFrame) -> pl.DataFrame:
    """Two candidates per refined_answers row (one partition): refine and void, sharing the
    refined answer's id; `drafts` gives each draft's truncation, lineage and drop reason."""
    draft = drafts.select(
        pl.col("id").alias("parent_id"),
        pl.col("truncated").alias("_draft_truncated"),
        pl.col("lineage").alias("_draft_lineage"),
        pl.col("drop_reason").alias("_draft_drop_reason"),
    )
    base = refined.join(draft, on="parent_id", how="left").with_columns(
        pl.col("partition_key").alias("tag_id"),
        pl.col("origin")
        .struct.field("tag_path")
        .str.split(" > ")
        .list.first()
        .alias("root_domain"),
    )
    refine_lineage = pl.coalesce(_used_rewrite_lineage(), pl.col("_draft_lineage"))
    refine = base.with_columns(
        pl.lit("refine").alias("variant"),
        refine_lineage.alias("lineage"),
    )
    void = base.with_columns(
        pl.lit("void").alias("variant"),
        pl.col("draft_answer").alias("answer"),
        pl.col("_draft_truncated").alias("truncated"),
        pl.col("_draft_drop_reason").alias("drop_reason"),
        pl.col("_draft_lineage").alias("lineage"),
        pl.lit(None, dtype=refined.schema["rounds"]).alias("rounds"),
        pl.lit(None, dtype=pl.Int64).alias("rounds_run"),
        pl.lit(None, dtype=pl.String).alias("stop_reason"),
    )
    columns = [c for c in CANDIDATE_COLUMNS if c != "finish_reason"]
    out = pl.concat(
        [frame.select(*columns, *EXTRA_COLUMNS) for frame in (refine, void)], how="vertical"
    )
    out = out.with_columns(
        pl.col("lineage").struct.field("finish_reason").alias("finish_reason"),
        pl.col("truncated").fill_null(False),
    )
    return out.select(*CANDIDATE_COLUMNS, *EXTRA_COLUMNS).sort("variant", "id")
