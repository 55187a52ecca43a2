"""What sft_dataset needs to know about Condor: where its rows come from (every sample's tag
is a node of the latest knowledge_tree) and its part of the card (root domain, task and
difficulty counts, the pictures, refinement tokens and the Refine vs Void judge)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from condor_dagster.core.export import concat_partitions, count_table, flatten_origin
from condor_dagster.core.prompts import LANGUAGES, load_prompt
from condor_dagster.methods.condor.candidates import VARIANTS
from condor_dagster.methods.condor.card_figures import figure_card_lines, write_card_figures
from condor_dagster.methods.condor.refine_judge import quality_card_lines, summarize

JSONL_FIELDS = ("tag_path", "task", "difficulty")
# Every template Condor's samples pass through (the candidates' lineage names only the last).
PROMPTS = (
    "condor/tree_expand",
    "condor/questions",
    "shared/answer",
    "shared/critique",
    "shared/refine",
    "condor/judge",
)


def tree_origin_check(samples: pl.DataFrame, extras: Mapping[str, Any]) -> dict[str, Any]:
    """Every Condor candidate's partition (its tag) must be a node of the knowledge tree."""
    tree = extras.get("knowledge_tree")
    if tree is None:
        return {"no_knowledge_tree": "materialize condor/knowledge_tree"}
    nodes = tree["node_id"].implode()
    orphans = samples.select((~pl.col("partition_key").is_in(nodes)).sum()).item()
    return {"rows_without_tree_node": int(orphans)} if orphans else {}


def _refine_tokens(samples: pl.DataFrame) -> int:
    """Completion tokens of every critique and rewrite round (a missing count adds 0)."""
    rounds = samples.filter(pl.col("variant") == "refine").select(
        pl.col("rounds").explode().alias("r")
    )
    rounds = rounds.filter(pl.col("r").is_not_null())
    if not rounds.height:
        return 0
    unnested = rounds.select(pl.col("r").struct.unnest())
    critique = unnested["critique_lineage"].struct.field("completion_tokens").sum()
    rewrite = unnested["answer_lineage"].struct.field("completion_tokens").fill_null(0).sum()
    return int(critique or 0) + int(rewrite or 0)


def refine_quality_lines(samples: pl.DataFrame, judgments: pl.DataFrame | None) -> list[str]:
    """The Refine vs Void section over the judgments of the current candidates: a judgment
    whose refined answer is no longer in the data (refined_answers rebuilt since) is counted as
    stale and left out, never mixed in."""
    if judgments is None or not judgments.height:
        return quality_card_lines(None, judge_models=[])
    current = judgments.select(
        "parent_id",
        pl.col("origin").struct.field("task"),
        pl.col("origin").struct.field("difficulty"),
        "outcome",
        pl.col("draft_first").struct.field("lineage").struct.field("model").alias("_model"),
    )
    matched = current.filter(pl.col("parent_id").is_in(samples["id"].implode()))
    summary = summarize(matched.select("task", "difficulty", "outcome").iter_rows())
    models = sorted(set(matched["_model"].drop_nulls().to_list()))
    return quality_card_lines(summary, judge_models=models, stale=current.height - matched.height)


def card_section(
    samples: pl.DataFrame, extras: Mapping[str, Any], out_dir: Path
) -> tuple[list[str], dict[str, Path]]:
    """Condor's card lines and pictures (written under out_dir/condor/)."""
    flat = flatten_origin(samples).collect()
    lines = ["## Condor", ""]
    for variant in VARIANTS:
        kept = flat.filter(pl.col("kept") & (pl.col("variant") == variant))
        lines += [
            f"### condor / {variant}: what the kept samples cover",
            "",
            count_table(Counter(kept["root_domain"].to_list()), "root domain"),
            count_table(Counter(kept["task"].to_list()), "task"),
            count_table(Counter(kept["difficulty"].to_list()), "difficulty"),
        ]
    void = samples.filter(pl.col("variant") == "void")
    draft_tokens = int(void["lineage"].struct.field("completion_tokens").sum() or 0)
    lines += [
        f"- tag partitions: {samples['partition_key'].n_unique()}",
        f"- draft completion tokens: {draft_tokens}",
        f"- refine completion tokens (critiques + rewrites): {_refine_tokens(samples)}",
        "- prompt shas: "
        + ", ".join(
            f"{name}/{lang} sha {load_prompt(name, lang).sha}"
            for name in PROMPTS
            for lang in LANGUAGES
        ),
        "",
    ]
    figures = write_card_figures(flat, out_dir / "condor")
    lines += figure_card_lines(figures, card_dir=out_dir)
    judgments = concat_partitions(extras.get("refine_quality"))
    lines += refine_quality_lines(samples, judgments)
    return lines, figures
