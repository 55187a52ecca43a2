"""sft_dataset, pure part: cross-tag dedup over stored embeddings, quality filters, the export
formats (Parquet with lineage, OpenAI/TRL `messages` JSONL, ShareGPT JSONL) and the card.

Two variants come out of the same question set, so the paper's comparison can be reproduced:
"refine" (refined answers, Condor Refine) and "void" (draft answers, Condor Void).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from condor_dagster.core.dedup import find_exact_duplicates, find_near_duplicates
from condor_dagster.core.quality import answer_problem, strip_meta_preamble

VARIANTS = ("refine", "void")


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
        raise KeyError(f"no stored embedding for question {missing!r} (deduplicated_questions)")
    lengths = gathered.list.len()
    dim = int(lengths[0])
    if (lengths != dim).any():
        raise ValueError(f"stored embeddings have different lengths ({lengths.unique().to_list()})")
    flat = gathered.explode().cast(pl.Float32)
    del gathered
    return flat.to_numpy().reshape(len(ids), dim)


def cross_tag_decisions(
    samples: pl.DataFrame,
    embeddings: pl.DataFrame | pl.LazyFrame,
    threshold: float,
    exact_search_max: int,
) -> pl.DataFrame:
    """`question_dup_of` / `question_similarity` per sample: exact then near duplicates of
    questions across tags, smallest question id kept, using the embeddings stored by
    deduplicated_questions (`id`, `embedding`; nothing is embedded again)."""
    ids = samples["question_id"].to_list()
    exact = find_exact_duplicates(ids, samples["question"].to_list())
    survivor_ids = [ids[i] for i, d in enumerate(exact) if d.kept]
    vectors = embedding_matrix(embeddings, survivor_ids)
    near = find_near_duplicates(survivor_ids, vectors, threshold, exact_search_max=exact_search_max)
    del vectors
    decided = {d.id: d for d in exact}
    decided.update({d.id: d for d in near.decisions})
    return samples.with_columns(
        pl.Series("question_dup_reason", [decided[i].reason for i in ids], pl.String),
        pl.Series("question_dup_of", [decided[i].duplicate_of for i in ids], pl.String),
        pl.Series("question_similarity", [decided[i].similarity for i in ids], pl.Float64),
        pl.lit(near.index_kind).alias("dedup_index"),
    )


def drop_reason(
    answer: str | None, truncated: bool, finish_reason: str | None, *, language: str = "en"
) -> str | None:
    """Why an answer cannot be a training sample, or None: rejected, empty_answer, truncated,
    then the shared quality gates (`core/quality.py`), the same for both variants: refusal,
    degenerate_repetition (`answer_problem`) and meta_commentary (an answer that is only talk
    about a rewrite, `strip_meta_preamble`)."""
    if finish_reason == "rejected":
        return "rejected"
    if answer is None or not answer.strip():
        return "empty_answer"
    if truncated:
        return "truncated"
    problem = answer_problem(answer, language)
    if problem is None:
        problem = strip_meta_preamble(answer, language)[2]
    return problem


# Rows per slice when a column is walked in Python: bounds the Python strings alive at once.
_SLICE_ROWS = 8192


def with_keep_decisions(samples: pl.DataFrame) -> pl.DataFrame:
    """`drop_reason_<variant>` / `kept_<variant>` for both variants; a cross-tag duplicate
    question drops both."""
    out = samples
    for variant, answer, truncated, finish in (
        ("refine", "answer", "truncated", "refine_finish_reason"),
        ("void", "draft_answer", "draft_truncated", "draft_finish_reason"),
    ):
        reasons: list[str | None] = []
        # Older sample frames may lack the language column; the gates then read every text
        # with both languages' patterns anyway.
        language = pl.col("language") if "language" in samples.columns else pl.lit("en")
        columns = samples.select(
            "question_dup_reason", answer, truncated, finish, language.alias("_language")
        )
        for part in columns.iter_slices(_SLICE_ROWS):
            reasons.extend(
                "cross_tag_duplicate" if dup else drop_reason(a, t, f, language=lang or "en")
                for dup, a, t, f, lang in part.iter_rows()
            )
        out = out.with_columns(
            pl.Series(f"drop_reason_{variant}", reasons, pl.String),
            pl.Series(f"kept_{variant}", [r is None for r in reasons], pl.Boolean),
        )
    return out


def chat_messages(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def sharegpt(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def variant_frame(samples: pl.DataFrame | pl.LazyFrame, variant: str) -> pl.LazyFrame:
    """The kept samples of a variant: id, the two texts, and every lineage column (lazy, so
    the exports stream it instead of holding a filtered copy of every sample)."""
    answer = "answer" if variant == "refine" else "draft_answer"
    return (
        samples.lazy()
        .filter(pl.col(f"kept_{variant}"))
        .select(
            pl.col("id"),
            pl.col("question"),
            pl.col(answer).alias("answer"),
            pl.exclude("id", "question", "answer", "draft_answer", "embedding"),
        )
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


def export_variant(samples: pl.DataFrame, out_dir: Path, variant: str) -> dict[str, Path]:
    """Parquet (all lineage columns), messages JSONL and ShareGPT JSONL for one variant's kept
    samples. Streamed: the Parquet file is sunk from a lazy query and the JSONL files are
    written a slice at a time, so no filtered copy of all samples is ever held."""
    paths = {
        "parquet": out_dir / f"sft_{variant}.parquet",
        "messages": out_dir / f"sft_{variant}.messages.jsonl",
        "sharegpt": out_dir / f"sft_{variant}.sharegpt.jsonl",
    }
    _atomic_write(
        paths["parquet"],
        lambda tmp: variant_frame(samples, variant).sink_parquet(tmp, compression="zstd"),
    )

    def rows() -> Iterator[dict[str, Any]]:
        for part in samples.iter_slices(_SLICE_ROWS):
            kept = variant_frame(part, variant).select(
                "id", "question", "answer", "tag_path", "task", "difficulty"
            )
            yield from kept.collect().iter_rows(named=True)

    _write_jsonl(
        paths["messages"],
        (
            {
                "id": r["id"],
                "messages": chat_messages(r["question"], r["answer"]),
                "tag_path": r["tag_path"],
                "task": r["task"],
                "difficulty": r["difficulty"],
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


def _count_table(counter: Counter[str], title: str) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))
    return f"| {title} | samples |\n|---|---|\n{rows}\n"


def dataset_card(samples: pl.DataFrame, facts: dict[str, Any]) -> str:
    """Markdown card: counts by root domain, task and difficulty per variant, drops, lengths,
    tokens, models and prompt shas, examples."""
    lines = [
        "# Condor SFT dataset",
        "",
        "Synthesized with condor-dagster (Condor: World Knowledge Tree, task x difficulty",
        "questions, Self-Reflection Refinement). `refine` holds refined answers, `void` the",
        "draft answers of the same questions.",
        "",
        "| | refine | void |",
        "|---|---|---|",
        f"| samples | {int(samples['kept_refine'].sum())} | {int(samples['kept_void'].sum())} |",
        f"| candidates | {samples.height} | {samples.height} |",
        "",
    ]
    for variant in VARIANTS:
        answer = "answer" if variant == "refine" else "draft_answer"
        # Only the short columns and the text lengths (characters), not a copy of the texts.
        kept = (
            samples.lazy()
            .filter(pl.col(f"kept_{variant}"))
            .select(
                "root_domain",
                "task",
                "difficulty",
                pl.col("question").str.len_chars().cast(pl.Int64).alias("question_chars"),
                pl.col(answer).str.len_chars().cast(pl.Int64).alias("answer_chars"),
            )
            .collect()
        )
        drops = Counter(samples[f"drop_reason_{variant}"].drop_nulls().to_list())
        lines += [
            f"## {variant}",
            "",
            _count_table(Counter(kept["root_domain"].to_list()), "root domain"),
            _count_table(Counter(kept["task"].to_list()), "task"),
            _count_table(Counter(kept["difficulty"].to_list()), "difficulty"),
            _count_table(drops, "dropped: reason") if drops else "Nothing dropped.\n",
            f"- question length (chars): {_lengths(kept['question_chars'].to_numpy())}",
            f"- answer length (chars): {_lengths(kept['answer_chars'].to_numpy())}",
            "",
        ]
    lines += ["## Provenance", ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    lines += ["", "## Examples", ""]
    examples = samples.lazy().filter(pl.col("kept_refine")).head(3).collect()
    for row in examples.iter_rows(named=True):
        lines += [
            f"**{row['tag_path']}** ({row['task']}, {row['difficulty']}) `{row['id']}`",
            "",
            f"> {row['question'][:400]}",
            "",
            f"{row['answer'][:600]}",
            "",
        ]
    return "\n".join(lines)


def write_card(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def validate_export(samples: pl.DataFrame, tree_node_ids: set[str]) -> dict[str, Any]:
    """The blocking check before export: schema, unique ids, no empty messages, every row
    traces to a knowledge_tree node. Returns the failures found (empty dict = pass)."""
    problems: dict[str, Any] = {}
    required = {"id", "question", "answer", "draft_answer", "tag_id", "question_id", "parent_id"}
    missing = sorted(required - set(samples.columns))
    if missing:
        return {"missing_columns": missing}
    duplicates = samples["id"].is_duplicated().sum()
    if duplicates:
        problems["duplicate_ids"] = int(duplicates)
    # Counted with expressions: filtering would copy every kept sample's texts.
    for variant, answer in (("refine", "answer"), ("void", "draft_answer")):
        empty = samples.select(
            (
                pl.col(f"kept_{variant}")
                & (
                    (pl.col("question").str.strip_chars() == "")
                    | (pl.col(answer).str.strip_chars() == "")
                )
            ).sum()
        ).item()
        if empty:
            problems[f"empty_messages_{variant}"] = empty
    orphans = samples.select((~pl.col("tag_id").is_in(list(tree_node_ids))).sum()).item()
    if orphans:
        problems["rows_without_tree_node"] = orphans
    return problems
