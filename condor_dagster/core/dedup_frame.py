"""Per-partition dedup of any method's generated texts over polars frames: the pure part of
the shared dedup stage (stages/dedup.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from condor_dagster.core.dedup import exact_then_near
from condor_dagster.core.rows import DropReason, SampleRow, arrow_schema

EmbedFn = Callable[[Sequence[str]], np.ndarray]


class DedupRow(SampleRow):
    """Every input row (same id, same contract fields) with its dedup decision."""

    text: str
    kept: bool
    """True when the text goes on to the next stage."""
    drop_reason: DropReason | None
    """Carried from the input, or exact_duplicate / near_duplicate / empty_text."""
    duplicate_of: str | None
    """Id of the row this one duplicates (kept, or itself a duplicate of a kept one)."""
    similarity: float | None
    """Cosine similarity to duplicate_of (1.0 for exact duplicates)."""
    embedding: list[float] | None
    """L2-normalised embedding, stored for the cross-partition pass (None when not embedded)."""
    embedding_model: str
    """Embedding model id."""


def dedup_frame(
    raw: pl.DataFrame, embed: EmbedFn, embedding_model: str, threshold: float
) -> pl.DataFrame:
    """Decisions for one partition's rows (columns of the row contract, `text`, `drop_reason`),
    every input row kept in the output.

    Rows dropped upstream keep their reason and are not embedded; exact duplicates are found
    before embedding, so they cost nothing.
    """
    usable = raw.filter(pl.col("drop_reason").is_null())
    ids = usable["id"].to_list()
    texts = usable["text"].to_list()
    result = exact_then_near(ids, texts, lambda rows: embed([texts[i] for i in rows]), threshold)
    decided = dict(zip(ids, result.decisions, strict=True))
    embedding_of = {ids[row]: result.vectors[n].tolist() for n, row in enumerate(result.searched)}
    order = raw["id"].to_list()
    decisions = [decided.get(i) for i in order]
    frame = raw.select(*(n for n in DedupRow.model_fields if n in raw.columns and n != "kept"))
    frame = frame.with_columns(
        pl.Series("kept", [bool(d and d.kept) for d in decisions], pl.Boolean),
        pl.coalesce(
            pl.col("drop_reason"),
            pl.Series([d.reason if d else None for d in decisions], dtype=pl.String),
        ).alias("drop_reason"),
        pl.Series("duplicate_of", [d.duplicate_of if d else None for d in decisions], pl.String),
        pl.Series("similarity", [d.similarity if d else None for d in decisions], pl.Float64),
        pl.Series(
            "embedding",
            [embedding_of.get(i) for i in order],
            pl.List(pl.Float32),
        ),
        pl.lit(embedding_model, pl.String).alias("embedding_model"),
    )
    return frame.select(list(DedupRow.model_fields))


def empty_dedup_frame(origin: object) -> pl.DataFrame:
    """A frame with DedupRow's schema and no rows (`origin`: the arrow type of the struct)."""
    return pl.from_arrow(arrow_schema(DedupRow, origin=origin).empty_table())  # type: ignore[return-value]
