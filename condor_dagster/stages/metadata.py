"""Materialization metadata every stage shows in the UI."""

from collections.abc import Sequence
from typing import Any

import dagster as dg
import polars as pl

from condor_dagster.core.llm import GenerationStats


def generation_metadata(stats: GenerationStats | Sequence[GenerationStats]) -> dict[str, Any]:
    """Tokens in/out, tokens/s, cache use, parse-failure and truncation rates."""
    total = GenerationStats.merged(list(stats)) if isinstance(stats, Sequence) else stats
    requests = max(total.requests, 1)
    return {
        **total.as_metadata(),
        "parse_failure_rate": round(total.parse_failures / requests, 4),
        "truncation_rate": round(total.truncated / requests, 4),
        "generation_seconds": round(total.generation_seconds, 3),
    }


def table_schema(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )


def markdown_preview(frame: pl.DataFrame, columns: Sequence[str], rows: int = 8) -> str:
    """A short markdown table; long cells are cut, pipes and newlines escaped. A struct column
    (the row contract's `origin`) shows as its fields."""
    head_rows = frame.head(rows).select(columns)
    for name, dtype in head_rows.schema.items():
        if isinstance(dtype, pl.Struct):
            head_rows = head_rows.unnest(name)
    frame, columns = head_rows, head_rows.columns

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text[:80] + ("…" if len(text) > 80 else "")

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "\n".join(
        "| " + " | ".join(cell(row[c]) for c in columns) + " |"
        for row in frame.iter_rows(named=True)
    )
    return head + body


def frame_metadata(frame: pl.DataFrame, preview_columns: Sequence[str]) -> dict[str, Any]:
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": table_schema(frame),
        "preview": dg.MetadataValue.md(markdown_preview(frame, preview_columns)),
    }


def partitioned_frame_metadata(
    frames: dict[str, pl.DataFrame], preview_columns: Sequence[str]
) -> dict[str, Any]:
    """Metadata of a multi-partition output: counts per partition and one preview."""
    total = sum(f.height for f in frames.values())
    first = next(iter(frames.values()))
    return {
        "dagster/row_count": total,
        "rows_per_partition": {key: f.height for key, f in frames.items()},
        "partitions": len(frames),
        "dagster/column_schema": table_schema(first),
        "preview": dg.MetadataValue.md(
            markdown_preview(pl.concat(list(frames.values())), preview_columns)
        ),
    }
