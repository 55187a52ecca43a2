"""Per-tag question dedup over polars frames: the pure part of deduplicated_questions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from condor_dagster.core.dedup import find_exact_duplicates, find_near_duplicates
from condor_dagster.core.records import DedupQuestionRow, arrow_schema

EmbedFn = Callable[[Sequence[str]], np.ndarray]


def dedup_question_frame(
    raw: pl.DataFrame, embed: EmbedFn, embedding_model: str, threshold: float
) -> pl.DataFrame:
    """Decisions for one tag's raw questions, every input row kept in the output.

    Rows dropped upstream (parse_failed, truncated, empty_question) keep their reason and are
    not embedded; exact duplicates are found before embedding, so they cost nothing.
    """
    usable = raw.filter(pl.col("drop_reason").is_null())
    ids = usable["id"].to_list()
    texts = usable["text"].to_list()
    exact = find_exact_duplicates(ids, texts)
    survivors = [i for i, d in enumerate(exact) if d.kept]
    vectors = embed([texts[i] for i in survivors])
    near = find_near_duplicates([ids[i] for i in survivors], vectors, threshold)
    decisions = {d.id: d for d in exact}
    decisions.update({d.id: d for d in near.decisions})
    embedding_of = {ids[i]: vectors[n].tolist() for n, i in enumerate(survivors)}

    records = []
    for row in raw.iter_rows(named=True):
        decision = decisions.get(row["id"])
        records.append(
            {
                "id": row["id"],
                "parent_id": row["parent_id"],
                "tag_id": row["tag_id"],
                "tag_path": row["tag_path"],
                "task": row["task"],
                "difficulty": row["difficulty"],
                "language": row["language"],
                "text": row["text"],
                "kept": bool(decision and decision.kept),
                "drop_reason": row["drop_reason"] or (decision.reason if decision else None),
                "duplicate_of": decision.duplicate_of if decision else None,
                "similarity": decision.similarity if decision else None,
                "embedding": embedding_of.get(row["id"]),
                "embedding_model": embedding_model,
            }
        )
    table = pa.Table.from_pylist(records, schema=arrow_schema(DedupQuestionRow))
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
