"""refine_quality[tag]: does Refine beat Void? The same LLM judges each draft against its
refined answer, pairwise, in both orders (pure logic: refine_judge.py)."""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from condor_dagster.core.llm import Completion, GenerationStats, LLMRequest, SamplingParams
from condor_dagster.core.prompts import code_version, prompts_sha
from condor_dagster.core.rows import frames_by_partition
from condor_dagster.methods.condor.partitions import tag_stage
from condor_dagster.methods.condor.refine_judge import (
    PROMPT_NAME,
    JudgeVerdict,
    RefineQualityRow,
    first_position_share,
    judge_pairs,
    pair_from_refined_row,
    summarize,
)
from condor_dagster.resources.llm import LLMResource
from condor_dagster.stages.metadata import generation_metadata, partitioned_frame_metadata
from condor_dagster.stages.partitions import (
    GPU_POOL,
    inputs_by_partition,
    output_for_partitions,
    run_started_at,
)

# A verdict JSON with a one-sentence reason is about 20 to 60 tokens; below this the judge
# would be cut off before the JSON closes and every pair would end as judge_failed.
MIN_JUDGE_TOKENS = 32


class RefineQualityConfig(dg.Config):
    """Pairwise judge settings."""

    enabled: bool = True
    """Judge the pairs; false records every row as `disabled` and sends no request."""
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    """Sampling temperature of the judge (0: greedy, the most repeatable verdicts)."""
    max_tokens: int = 192
    """Completion budget of one verdict (JSON with a short reason)."""

    @field_validator("max_tokens")
    @classmethod
    def _room_for_a_verdict(cls, value: int) -> int:
        if value < MIN_JUDGE_TOKENS:
            raise ValueError(
                f"max_tokens must be >= {MIN_JUDGE_TOKENS} so the verdict JSON can close, "
                f"got {value}"
            )
        return value


def _code_version() -> str:
    # The schema is part of what the judge is asked: changing it changes the verdicts.
    settings = {**RefineQualityConfig().model_dump(), "schema": JudgeVerdict.model_json_schema()}
    return code_version([prompts_sha(PROMPT_NAME)], settings)


@tag_stage(
    "refine_quality",
    ins={"refined_answers": "refined_answers"},
    kinds={"vllm", "parquet"},
    pool=GPU_POOL,
    code_version=_code_version(),
    checks=["not_empty", "parents_are_refined_answers"],
)
def refine_quality(
    context: dg.AssetExecutionContext,
    config: RefineQualityConfig,
    llm: LLMResource,
    refined_answers: Any,
) -> Iterator[dg.Output[Any] | dg.AssetCheckResult]:
    """Draft vs refined answer, judged twice (each in position A once): one row per refined
    answer with both verdicts and the pair's outcome; the win rates are in the metadata."""
    refined = inputs_by_partition(context, refined_answers)
    keys = list(context.partition_keys)
    pairs = [
        pair_from_refined_row(row) for key in keys for row in refined[key].iter_rows(named=True)
    ]
    rewritten = sum(p.rewritten for p in pairs)
    context.log.info(
        f"refine_quality: {len(pairs)} refined answers across {len(keys)} tag partitions, "
        f"{rewritten} rewritten ({2 * rewritten if config.enabled else 0} judge requests)"
    )
    stats: list[GenerationStats] = []

    def generate(requests: Sequence[LLMRequest]) -> Sequence[Completion]:
        result = llm.generate(requests)
        stats.append(result.stats)
        context.log.info(f"refine_quality: {len(requests)} judge requests done")
        return result.completions

    rows = judge_pairs(
        pairs,
        generate,
        sampling=SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens),
        enabled=config.enabled,
        run_id=context.run.run_id,
        now=run_started_at(context),
    )
    frames = frames_by_partition(rows, keys, RefineQualityRow)
    summary = summarize((r.origin.task, r.origin.difficulty, r.outcome) for r in rows)
    by_partition = {k: summarize(_outcomes(f)).overall.win_rate for k, f in frames.items()}
    refined_ids = {k: set(refined[k]["id"].to_list()) for k in keys}
    orphans = {
        k: int((~f["parent_id"].is_in(list(refined_ids[k]))).sum()) for k, f in frames.items()
    }
    empty = [k for k, f in frames.items() if f.height == 0]
    yield dg.Output(
        output_for_partitions(context, frames),
        metadata={
            **partitioned_frame_metadata(frames, ["origin", "outcome"]),
            **generation_metadata(stats),
            **summary.as_metadata(),
            "win_rate_by_partition": by_partition,
            "first_position_share": first_position_share(rows),
            "judge_enabled": config.enabled,
        },
    )
    yield dg.AssetCheckResult(
        check_name="not_empty", passed=not empty, metadata={"empty_partitions": empty}
    )
    yield dg.AssetCheckResult(
        check_name="parents_are_refined_answers",
        passed=not any(orphans.values()),
        metadata={"rows_without_refined_parent": {k: v for k, v in orphans.items() if v}},
    )


def _outcomes(frame: Any) -> Any:
    """(task, difficulty, outcome) of every row of a refine_quality frame."""
    import polars as pl

    origin = pl.col("origin").struct
    return frame.select(
        origin.field("task"), origin.field("difficulty"), pl.col("outcome")
    ).iter_rows()
