"""sft_dataset: every materialized tag partition -> cross-tag dedup, filters, exports, card."""

import json
from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.assets.metadata import frame_metadata
from condor_dagster.core.card_figures import figure_card_lines, write_card_figures
from condor_dagster.core.export import (
    VARIANTS,
    cross_tag_decisions,
    dataset_card,
    export_variant,
    validate_export,
    with_keep_decisions,
    write_card,
)
from condor_dagster.core.paths import data_dir
from condor_dagster.core.prompts import load_prompt
from condor_dagster.core.refine_quality import quality_card_lines, summarize

ALL_PARTITIONS = {"allow_missing_partitions": True}


class SftDatasetConfig(dg.Config):
    """Export settings."""

    similarity_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    """Cosine similarity at or above which questions of different tags are duplicates."""
    exact_search_max: int = Field(default=200_000, ge=1)
    """Above this many questions the cross-tag search uses an approximate (IVF) index."""
    export_dir: str | None = None
    """Where the exports go; default <CONDOR_DATA_DIR>/exports."""


def _concat(frames: dict[str, pl.LazyFrame]) -> pl.LazyFrame | None:
    """The non-empty partitions as one lazy frame (row counts come from the Parquet footers)."""
    parts = [f for f in frames.values() if f is not None and f.select(pl.len()).collect().item()]
    return pl.concat(parts, how="vertical_relaxed") if parts else None


def _refine_tokens(samples: pl.DataFrame) -> int:
    """Completion tokens of every critique and rewrite round (a missing count adds 0)."""

    def tokens(lineage: str) -> pl.Expr:
        field = pl.element().struct.field(lineage).struct.field("completion_tokens")
        return pl.col("rounds").list.eval(field).explode().sum().alias(lineage)

    critique, rewrite = samples.select(tokens("critique_lineage"), tokens("answer_lineage")).row(0)
    return int(critique or 0) + int(rewrite or 0)


# The refined columns the plan carries; the others (answers, rounds) are gathered one by one.
_PLAN_COLUMNS = ("id", "parent_id", "question_id", "question", "tag_path")


def sample_plan(refined: pl.LazyFrame, drafts: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The rows of the samples frame without the long texts, in id order: one row per refined
    answer with `_row` (its row in `refined`), the short refined columns, its draft's
    truncation and lineage beside it, the refine finish reason and the root domain."""
    last_finish = (
        pl.col("rounds")
        .list.eval(
            pl.element().struct.field("answer_lineage").struct.field("finish_reason").drop_nulls()
        )
        .list.last()
    )
    draft_cols = drafts.lazy().select(
        pl.col("id").alias("parent_id"),
        pl.col("truncated").alias("draft_truncated"),
        pl.col("lineage").struct.field("finish_reason").alias("draft_finish_reason"),
        pl.col("lineage").alias("draft_lineage"),
    )
    return (
        refined.lazy()
        .with_row_index("_row")
        .select("_row", *_PLAN_COLUMNS, last_finish.alias("_rewrite_finish"))
        .join(draft_cols, on="parent_id", how="left")
        .with_columns(
            pl.coalesce("_rewrite_finish", "draft_finish_reason").alias("refine_finish_reason"),
            pl.col("tag_path").str.split(" > ").list.first().alias("root_domain"),
        )
        .drop("_rewrite_finish")
        .sort("id")
        .collect()
    )


def build_samples(refined: pl.LazyFrame, plan: pl.DataFrame) -> pl.DataFrame:
    """The samples frame: every refined column in plan order, then the plan's own columns.

    Each long column is read from the scan and reordered on its own, so memory holds the
    result plus one column, never the unordered frame beside its ordered copy."""
    rows = plan["_row"]
    # One chunk before the gather: gathering nested columns (rounds) across the partitions'
    # chunks costs several times the column; contiguous, it costs about one copy.
    columns = [
        plan[name]
        if name in _PLAN_COLUMNS
        else refined.select(name).collect()[name].rechunk().gather(rows)
        for name in refined.collect_schema().names()
    ]
    refined_names = {column.name for column in columns}
    extra = [plan[name] for name in plan.columns if name not in refined_names and name != "_row"]
    return pl.DataFrame([*columns, *extra])


def refine_quality_section(samples: pl.DataFrame, judgments: pl.LazyFrame | None) -> list[str]:
    """The card's Refine vs Void section over the judgments of the current candidates: a
    judgment whose refined answer is no longer in the data (refined_answers rebuilt since) is
    counted as stale and left out, never mixed in."""
    if judgments is None:
        return quality_card_lines(None, judge_models=[])
    current = judgments.select(
        "parent_id",
        "task",
        "difficulty",
        "outcome",
        pl.col("draft_first").struct.field("lineage").struct.field("model").alias("_model"),
    ).collect()
    matched = current.filter(pl.col("parent_id").is_in(samples["id"].implode()))
    summary = summarize(matched.select("task", "difficulty", "outcome").iter_rows())
    models = sorted(set(matched["_model"].drop_nulls().to_list()))
    return quality_card_lines(summary, judge_models=models, stale=current.height - matched.height)


@dg.asset(
    group_name="condor_export",
    kinds={"faiss", "parquet"},
    ins={
        "refined_answers": dg.AssetIn(metadata=ALL_PARTITIONS),
        "draft_answers": dg.AssetIn(metadata=ALL_PARTITIONS),
        "deduplicated_questions": dg.AssetIn(metadata=ALL_PARTITIONS),
        "refine_quality": dg.AssetIn(metadata=ALL_PARTITIONS),
    },
    check_specs=[dg.AssetCheckSpec("export_ready", asset="sft_dataset", blocking=True)],
)
def sft_dataset(
    context: dg.AssetExecutionContext,
    config: SftDatasetConfig,
    knowledge_tree: pl.DataFrame,
    refined_answers: dict[str, pl.LazyFrame],
    draft_answers: dict[str, pl.LazyFrame],
    deduplicated_questions: dict[str, pl.LazyFrame],
    refine_quality: dict[str, pl.LazyFrame],
):
    """Every sample with its keep decisions; exports both variants (refine, void) as Parquet,
    messages JSONL and ShareGPT JSONL, plus a dataset card with its pictures (lengths, task x
    difficulty) and the Refine vs Void win rate from refine_quality ("not measured" without it).

    The tag partitions come in as lazy scans of the IO manager's files (LazyFrame inputs): each
    column is read once and only where it is used, so memory peaks near one samples frame."""
    refined = _concat(refined_answers)
    drafts = _concat(draft_answers)
    dedup = _concat(deduplicated_questions)
    if refined is None or drafts is None or dedup is None:
        raise dg.Failure(
            "no materialized refined_answers partitions yet; materialize the tag assets first "
            "(make demo, or a backfill of raw_questions..refined_answers)"
        )
    # Only what the join and the provenance facts need from the drafts (not their texts).
    draft_facts = drafts.select("id", "truncated", "lineage").collect()
    models = sorted(set(draft_facts["lineage"].struct.field("model").to_list()))
    draft_tokens = int(draft_facts["lineage"].struct.field("completion_tokens").sum())
    plan = sample_plan(refined, draft_facts)
    del draft_facts
    # The cross-tag search (embedding matrix, index) runs before the long texts are read.
    plan = cross_tag_decisions(
        plan,
        dedup.filter(pl.col("kept") & pl.col("embedding").is_not_null()),
        config.similarity_threshold,
        config.exact_search_max,
    )
    samples = with_keep_decisions(build_samples(refined, plan))
    del plan
    problems = validate_export(samples, set(knowledge_tree["node_id"].to_list()))
    yield dg.AssetCheckResult(
        check_name="export_ready",
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"problems": problems, "samples": samples.height},
    )
    if problems:
        raise dg.Failure(f"sft_dataset failed its export check, nothing exported: {problems}")

    out = Path(config.export_dir) if config.export_dir else data_dir() / "exports"
    files: dict[str, str] = {}
    for variant in VARIANTS:
        for kind, path in export_variant(samples, out, variant).items():
            files[f"{variant}_{kind}"] = str(path)
    facts = {
        "tag partitions": samples["tag_id"].n_unique(),
        "models": models,
        "prompt shas": {
            f"{name}/{lang}": load_prompt(name, lang).sha
            for name in ("questions", "answer", "critique", "refine", "judge")
            for lang in ("en", "zh")
        },
        "draft completion tokens": draft_tokens,
        "refine completion tokens (critiques + rewrites)": _refine_tokens(samples),
        "cross-tag dedup index": samples["dedup_index"][0],
        "similarity threshold": config.similarity_threshold,
    }
    card = out / "README.md"
    figures = write_card_figures(samples, out)
    sections = [
        *figure_card_lines(figures, card_dir=out),
        *refine_quality_section(samples, _concat(refine_quality or {})),
    ]
    write_card(card, dataset_card(samples, facts) + "\n" + "\n".join(sections))
    files["card"] = str(card)
    files.update({f"figure_{name}": str(path) for name, path in figures.items()})
    context.log.info(f"sft_dataset: exports written to {out}")
    drops = {v: dict(Counter(samples[f"drop_reason_{v}"].drop_nulls().to_list())) for v in VARIANTS}
    yield dg.Output(
        samples,
        metadata={
            **frame_metadata(
                samples, ["tag_path", "kept_refine", "drop_reason_refine", "question"]
            ),
            "samples_refine": int(samples["kept_refine"].sum()),
            "samples_void": int(samples["kept_void"].sum()),
            "dropped_by_reason": json.dumps(drops),
            "files": files,
            "export_dir": str(out),
        },
    )
