"""The one long format every method ends in (`<method>/sft_candidates`): one row per
(question, variant), where a variant names which answer the row carries (Condor: refine and
void; another method names its own).

All variants of a question share the candidate `id` (the id of the method's last row for the
question, so refine and void of one question pair up); `parent_id` is the row the answer was
read from. A method may add its own columns after the contract's.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from condor_dagster.core.rows import DROP_REASONS, Lineage, arrow_schema

CANDIDATE_COLUMNS = (
    "id",
    "parent_id",
    "method",
    "partition_key",
    "language",
    "origin",
    "variant",
    "question_id",
    "question",
    "answer",
    "truncated",
    "finish_reason",
    "drop_reason",
    "lineage",
)
_TYPES: dict[str, Any] = {
    "id": pl.String,
    "parent_id": pl.String,
    "method": pl.String,
    "partition_key": pl.String,
    "language": pl.String,
    "variant": pl.String,
    "question_id": pl.String,
    "question": pl.String,
    "answer": pl.String,
    "truncated": pl.Boolean,
    "finish_reason": pl.String,
    "drop_reason": pl.String,
}


def lineage_dtype() -> Any:
    """The polars type of a `lineage` column (from the Lineage model)."""
    frame = pl.from_arrow(arrow_schema(Lineage).empty_table())
    assert isinstance(frame, pl.DataFrame)
    return pl.Struct(frame.schema)


def check_candidates(frame: pl.DataFrame, method: str) -> list[str]:
    """Problems that make `frame` not a candidates frame of `method` (empty list: none)."""
    problems = []
    missing = [c for c in CANDIDATE_COLUMNS if c not in frame.columns]
    if missing:
        return [f"{method}/sft_candidates lacks the contract columns {missing}"]
    for name, dtype in _TYPES.items():
        if frame.schema[name] != dtype:
            problems.append(f"column {name} is {frame.schema[name]}, the contract says {dtype}")
    if not isinstance(frame.schema["origin"], pl.Struct):
        problems.append(f"column origin is {frame.schema['origin']}, the contract says a struct")
    other = set(frame["method"].unique().to_list()) - {method}
    if other:
        problems.append(f"rows of other methods {sorted(other)} in {method}/sft_candidates")
    reasons = set(frame["drop_reason"].drop_nulls().unique().to_list()) - set(DROP_REASONS)
    if reasons:
        problems.append(f"drop reasons outside the vocabulary: {sorted(reasons)}")
    duplicated = frame.select(pl.struct("id", "variant").is_duplicated().sum()).item()
    if duplicated:
        problems.append(f"{duplicated} rows repeat an (id, variant) pair")
    return problems
