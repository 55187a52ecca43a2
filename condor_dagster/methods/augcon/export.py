"""What sft_dataset needs to know about AugCon: every sample traces to a corpus document, and
its part of the card (documents, chunks, tree depth, languages, prompts)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from condor_dagster.core.export import concat_partitions, count_table, flatten_origin
from condor_dagster.core.prompts import LANGUAGES, load_prompt

# AugCon's own record in the JSONL exports, beside question and answer.
JSONL_FIELDS = ("context", "source", "node_path")
PROMPTS = ("augcon/split", "augcon/answer", "augcon/self_check")


def document_origin_check(samples: pl.DataFrame, extras: Mapping[str, Any]) -> dict[str, Any]:
    """Every AugCon candidate's document must be a row of corpus/documents."""
    documents = concat_partitions(extras.get("documents"))
    if documents is None:
        return {"no_documents": "materialize corpus/documents for the shards"}
    known = documents["id"].implode()
    orphans = samples.select(
        (~pl.col("origin").struct.field("document_id").is_in(known)).sum()
    ).item()
    return {"rows_without_document": int(orphans)} if orphans else {}


def card_section(
    samples: pl.DataFrame, extras: Mapping[str, Any], out_dir: Path
) -> tuple[list[str], dict[str, Path]]:
    """AugCon's card lines (no pictures)."""
    del out_dir
    flat = flatten_origin(samples).collect()
    kept = flat.filter(pl.col("kept"))
    chunks = concat_partitions(extras.get("chunks"))
    lines = [
        "## AugCon",
        "",
        "### augcon / grounded: what the kept samples cover",
        "",
        count_table(Counter(kept["language"].to_list()), "language"),
        count_table(Counter(str(d) for d in kept["depth"].to_list()), "tree depth"),
        f"- corpus shards: {samples['partition_key'].n_unique()}",
        f"- documents sampled: {kept['document_id'].n_unique()}",
        f"- chunks sampled: {kept['chunk_id'].n_unique()} of "
        f"{chunks.height if chunks is not None else 0}",
        "- answer completion tokens: "
        f"{int(samples['lineage'].struct.field('completion_tokens').sum() or 0)}",
        "- prompt shas: "
        + ", ".join(
            f"{name}/{lang} sha {load_prompt(name, lang).sha}"
            for name in PROMPTS
            for lang in LANGUAGES
        ),
        "",
    ]
    return lines, {}
