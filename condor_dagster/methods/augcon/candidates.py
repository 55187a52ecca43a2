"""AugCon's candidates, pure part: each grounded answer as one row of the long format (variant
"grounded"); its origin keeps AugCon's own record (context, document, chunk, tree path)."""

from __future__ import annotations

import polars as pl

from condor_dagster.core.candidates import CANDIDATE_COLUMNS

VARIANTS = ("grounded",)


def augcon_candidates(answers: pl.DataFrame) -> pl.DataFrame:
    """One candidate per grounded_answers row (one partition), id the answer's."""
    out = answers.with_columns(
        pl.lit("grounded").alias("variant"),
        pl.col("parent_id").alias("question_id"),
        pl.col("lineage").struct.field("finish_reason").alias("finish_reason"),
    )
    return out.select(*CANDIDATE_COLUMNS).sort("id")
