"""sft_dataset, pure part: cross-method dedup over stored embeddings, the shared filters, the
export formats (Parquet with lineage, OpenAI/TRL `messages` JSONL, ShareGPT JSONL) per
(method, variant) and mixed per variant, and the dataset card.

Input: every method's candidates in the long format of core/candidates.py. Questions are
deduplicated across every partition of every method at once (the smallest question id of a
duplicate group is kept, so the result does not depend on which method or run came first),
with the embeddings the methods' dedup stages stored; nothing is embedded again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from condor_dagster.core.candidates import CANDIDATE_COLUMNS
from condor_dagster.core.dedup import exact_then_near
from condor_dagster.core.quality import answer_drop_reason

# Columns of the mixed (all methods) files and of the sft_dataset asset: the contract, the
# origin as JSON (its struct differs by method) and the decisions made here (drop_reason,
# a contract column, then holds the final reason).
DECISION_COLUMNS = (
    "question_dup_reason",
    "question_dup_of",
    "question_similarity",
    "dedup_index",
    "kept",
)


def embedding_matrix(embeddings: pl.DataFrame | pl.LazyFrame, ids: Sequence[str]) -> np.ndarray:
    """The float32 (len(ids), d) matrix whose row i is the stored embedding of `ids[i]`.

    `embeddings` has columns `id` and `embedding` (a list column); when an id occurs twice the
    last row wins. The rows are gathered by a join and the Arrow values buffer becomes the matrix
    in one copy: no per-row arrays (200k small numpy arrays cost several times the data).
    """
    frame = embeddings.lazy().select("id", "embedding").collect()
    if frame["id"].is_duplicated().any():
        frame = frame.unique(subset="id", keep="last", maintain_order=True)
    if not ids:
        dim = len(frame["embedding"][0]) if frame.height else 0
        return np.zeros((0, dim), np.float32)
    wanted = pl.DataFrame({"id": list(ids)}, schema={"id": pl.String})
    gathered = wanted.join(frame, on="id", how="left", maintain_order="left")["embedding"]
    del frame
    if gathered.null_count():
        missing = wanted.filter(gathered.is_null())["id"][0]
        raise KeyError(f"no stored embedding for question {missing!r} (the method's dedup asset)")
    lengths = gathered.list.len()
    dim = int(lengths[0])
    if (lengths != dim).any():
        raise ValueError(f"stored embeddings have different lengths ({lengths.unique().to_list()})")
    flat = gathered.explode().cast(pl.Float32)
    del gathered
    return flat.to_numpy().reshape(len(ids), dim)


def concat_partitions(frames: Mapping[str, Any] | None) -> pl.DataFrame | None:
    """Every stored partition of an input ({partition: frame}) as one frame; None when there
    are no rows (nothing materialized yet, or only empty partitions)."""
    parts = [f.lazy() for f in (frames or {}).values() if f is not None]
    if not parts:
        return None
    frame = pl.concat(parts, how="vertical_relaxed").collect()
    return frame if frame.height else None


def embedding_models(embeddings: Mapping[str, pl.DataFrame]) -> list[str]:
    """The one embedding model every method's stored embeddings come from, as [model]; a
    ValueError names each method's models when they differ (their vectors are not comparable)."""
    by_method = {
        method: sorted(set(frame["embedding_model"].drop_nulls().to_list()))
        for method, frame in embeddings.items()
        if frame.height
    }
    models = sorted({m for found in by_method.values() for m in found})
    if len(models) > 1:
        raise ValueError(
            f"stored question embeddings come from different embedding models {by_method}: "
            "vectors of different models cannot be compared; rematerialize the dedup stages "
            "of every method with one embeddings resource"
        )
    return models


def cross_partition_decisions(
    questions: pl.DataFrame,
    embeddings: pl.DataFrame,
    threshold: float,
    exact_search_max: int,
) -> pl.DataFrame:
    """One row per distinct question_id of `questions` (question_id, question) with its
    decision: exact then near duplicates across every partition and method, smallest question
    id kept, vectors from `embeddings` (id, embedding)."""
    unique = questions.unique("question_id", keep="first").sort("question_id")
    ids = unique["question_id"].to_list()
    result = exact_then_near(
        ids,
        unique["question"].to_list(),
        lambda rows: embedding_matrix(embeddings, [ids[r] for r in rows]),
        threshold,
        exact_search_max=exact_search_max,
    )
    d = result.decisions
    return pl.DataFrame(
        {
            "question_id": ids,
            "question_dup_reason": [None if x.kept else "cross_partition_duplicate" for x in d],
            "question_dup_of": [x.duplicate_of for x in d],
            "question_similarity": [x.similarity for x in d],
            "dedup_index": [result.index_kind] * len(ids),
        },
        schema={
            "question_id": pl.String,
            "question_dup_reason": pl.String,
            "question_dup_of": pl.String,
            "question_similarity": pl.Float64,
            "dedup_index": pl.String,
        },
    )


# Rows per slice when a column is walked in Python: bounds the Python strings alive at once.
_SLICE_ROWS = 8192


def with_keep_decisions(candidates: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """`drop_reason` / `kept` per candidate: a cross-partition duplicate question drops every
    variant; otherwise the stage's own reason, else the shared filters on the answer."""
    joined = candidates.join(decisions, on="question_id", how="left")
    reasons: list[str | None] = []
    columns = joined.select(
        "question_dup_reason", "drop_reason", "answer", "truncated", "finish_reason", "language"
    )
    for part in columns.iter_slices(_SLICE_ROWS):
        reasons.extend(
            dup or own or answer_drop_reason(a, bool(t), f, language=lang or "en")
            for dup, own, a, t, f, lang in part.iter_rows()
        )
    return joined.with_columns(
        pl.Series("drop_reason", reasons, pl.String),
        pl.Series("kept", [r is None for r in reasons], pl.Boolean),
    )


def flatten_origin(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The origin struct's fields as columns (a field whose name is taken gets `origin_`)."""
    lazy = frame.lazy()
    schema = lazy.collect_schema()
    origin = schema["origin"]
    assert isinstance(origin, pl.Struct), f"origin must be a struct, got {origin}"
    fields = [f.name for f in origin.fields]
    taken = set(schema.names())
    return lazy.with_columns(
        pl.col("origin").struct.field(f).alias(f"origin_{f}" if f in taken else f) for f in fields
    ).drop("origin")


def mixed_frame(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The contract and decision columns with the origin as JSON: the same schema for every
    method, so the methods' rows concatenate."""
    return frame.lazy().select(
        *(c for c in CANDIDATE_COLUMNS if c != "origin"),
        pl.col("origin").struct.json_encode().alias("origin"),
        *DECISION_COLUMNS,
    )


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary sibling, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    _atomic_write(path, write)


def chat_messages(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def sharegpt(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def export_files(
    kept: pl.LazyFrame, out_dir: Path, stem: str, *, extra: Sequence[str] = ()
) -> dict[str, Path]:
    """Parquet (every column), messages JSONL and ShareGPT JSONL of the kept rows of one
    (method, variant) or one mixed variant. `extra`: columns copied into each JSONL record
    beside id and method. Streamed: the Parquet file is sunk from the lazy query and the JSONL
    files are written a slice at a time."""
    paths = {
        "parquet": out_dir / f"{stem}.parquet",
        "messages": out_dir / f"{stem}.messages.jsonl",
        "sharegpt": out_dir / f"{stem}.sharegpt.jsonl",
    }
    _atomic_write(paths["parquet"], lambda tmp: kept.sink_parquet(tmp, compression="zstd"))
    # The JSONL columns, read once for both files (not the lineage and other wide columns).
    frame = kept.select("id", "method", "question", "answer", *extra).collect()

    def rows() -> Iterator[dict[str, Any]]:
        for part in frame.iter_slices(_SLICE_ROWS):
            yield from part.iter_rows(named=True)

    _write_jsonl(
        paths["messages"],
        (
            {
                "id": r["id"],
                "method": r["method"],
                "messages": chat_messages(r["question"], r["answer"]),
                **{k: r[k] for k in extra},
            }
            for r in rows()
        ),
    )
    _write_jsonl(
        paths["sharegpt"],
        ({"id": r["id"], "conversations": sharegpt(r["question"], r["answer"])} for r in rows()),
    )
    return paths


def _lengths(lengths: np.ndarray) -> str:
    if not len(lengths):
        return "-"
    return (
        f"mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
        f"p95 {np.percentile(lengths, 95):.0f}, max {lengths.max()}"
    )


def count_table(counter: Counter[str], title: str) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))
    return f"| {title} | samples |\n|---|---|\n{rows}\n"


def summary_lines(samples: pl.DataFrame) -> list[str]:
    """The card's head: samples and candidates per (method, variant)."""
    counts = (
        samples.group_by("method", "variant")
        .agg(pl.len().alias("candidates"), pl.col("kept").sum().alias("samples"))
        .sort("method", "variant")
    )
    lines = ["| method | variant | samples | candidates |", "|---|---|---|---|"]
    lines += [
        f"| {r['method']} | {r['variant']} | {r['samples']} | {r['candidates']} |"
        for r in counts.iter_rows(named=True)
    ]
    return [*lines, ""]


def variant_lines(samples: pl.DataFrame, method: str, variant: str) -> list[str]:
    """Drops and lengths of one (method, variant)."""
    rows = samples.filter((pl.col("method") == method) & (pl.col("variant") == variant))
    kept = rows.filter(pl.col("kept")).select(
        pl.col("question").str.len_chars().cast(pl.Int64).alias("q"),
        pl.col("answer").str.len_chars().cast(pl.Int64).alias("a"),
    )
    drops = Counter(rows["drop_reason"].drop_nulls().to_list())
    return [
        f"### {method} / {variant}",
        "",
        count_table(drops, "dropped: reason") if drops else "Nothing dropped.\n",
        f"- question length (chars): {_lengths(kept['q'].to_numpy())}",
        f"- answer length (chars): {_lengths(kept['a'].to_numpy())}",
        "",
    ]


def provenance_lines(samples: pl.DataFrame) -> list[str]:
    """Models, prompt templates with their shas and completion tokens, per method, read from
    the rows' lineage (so the card names what actually produced the data)."""
    lines = ["## Provenance", ""]
    for (method,), rows in sorted(samples.group_by("method"), key=lambda g: str(g[0][0])):
        lineage = rows.select(pl.col("lineage").struct.unnest())
        models = sorted(set(lineage["model"].drop_nulls().to_list()))
        prompts = sorted(
            {f"{n} sha {s}" for n, s in lineage.select("prompt_name", "prompt_sha").rows() if n}
        )
        lines += [
            f"- {method} models: {models}",
            f"- {method} prompts: {', '.join(prompts) or '-'}",
        ]
    return [*lines, ""]


def example_lines(samples: pl.DataFrame, per_method: int = 2) -> list[str]:
    lines = ["## Examples", ""]
    kept = samples.filter(pl.col("kept")).sort("method", "variant", "id")
    for (method,), rows in sorted(kept.group_by("method"), key=lambda g: str(g[0][0])):
        for row in rows.head(per_method).iter_rows(named=True):
            lines += [
                f"**{method} / {row['variant']}** `{row['id']}` (partition {row['partition_key']})",
                "",
                f"> {row['question'][:400]}",
                "",
                f"{row['answer'][:600]}",
                "",
            ]
    return lines


def write_card(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def validate_export(samples: pl.DataFrame) -> dict[str, Any]:
    """The blocking check's method-neutral part: the columns, unique (id, variant), no empty
    message among the kept rows. Returns the failures found (empty dict = pass); each method
    adds its own origin check (a tag node, a corpus document)."""
    missing = sorted({*CANDIDATE_COLUMNS, "kept"} - set(samples.columns))
    if missing:
        return {"missing_columns": missing}
    problems: dict[str, Any] = {}
    duplicates = samples.select(pl.struct("id", "variant").is_duplicated().sum()).item()
    if duplicates:
        problems["duplicate_ids"] = int(duplicates)
    empty = samples.select(
        (
            pl.col("kept")
            & (
                (pl.col("question").str.strip_chars() == "")
                | (pl.col("answer").str.strip_chars() == "")
            )
        ).sum()
    ).item()
    if empty:
        problems["empty_messages"] = int(empty)
    return problems
