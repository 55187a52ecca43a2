"""draft_answers[tag]: one answer per kept question (Condor Void)."""

from collections import Counter

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.assets.metadata import generation_metadata, partitioned_frame_metadata
from condor_dagster.assets.partitions import (
    GPU_POOL,
    inputs_by_partition,
    output_for_partitions,
    per_tag_asset,
    run_started_at,
)
from condor_dagster.core.llm import SamplingParams
from condor_dagster.core.prompts import code_version, prompts_sha
from condor_dagster.core.quality import answer_problem
from condor_dagster.core.questions import AnswerJob, answer_jobs, answer_rows
from condor_dagster.core.records import DraftAnswerRow, frames_by_tag
from condor_dagster.resources.llm import LLMResource


class DraftAnswersConfig(dg.Config):
    """Answer generation settings."""

    temperature: float = Field(default=0.7, ge=0.0)
    """Sampling temperature."""
    max_tokens: int = Field(default=1024, ge=16)
    """Completion budget of one answer; longer answers are flagged truncated."""


def _code_version() -> str:
    return code_version([prompts_sha("answer")], DraftAnswersConfig().model_dump())


@per_tag_asset(
    kinds={"vllm", "parquet"},
    pool=GPU_POOL,
    code_version=_code_version(),
    checks=["not_empty", "parents_are_kept_questions"],
)
def draft_answers(
    context: dg.AssetExecutionContext,
    config: DraftAnswersConfig,
    llm: LLMResource,
    deduplicated_questions,
):
    """Answers with the question id as parent, finish_reason, tokens and a truncation flag."""
    questions = inputs_by_partition(context, deduplicated_questions)
    keys = list(context.partition_keys)
    sampling = SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens)
    jobs: list[AnswerJob] = [job for key in keys for job in answer_jobs(questions[key], sampling)]
    context.log.info(f"draft_answers: {len(jobs)} questions across {len(keys)} tag partitions")
    result = llm.generate(
        [job.request for job in jobs],
        progress=lambda done, total, _: context.log.info(f"draft_answers: {done}/{total} done"),
    )
    rows = answer_rows(
        jobs, result.completions, run_id=context.run.run_id, now=run_started_at(context)
    )
    frames = frames_by_tag(rows, keys, DraftAnswerRow)

    kept_ids = {k: set(questions[k].filter(pl.col("kept"))["id"].to_list()) for k in keys}
    orphans = {k: sorted(set(f["parent_id"].to_list()) - kept_ids[k]) for k, f in frames.items()}
    orphans = {k: v for k, v in orphans.items() if v}
    empty = [k for k, f in frames.items() if f.height == 0]
    # Drafts stay (refinement may fix them); sft_dataset drops these from the void variant.
    flagged = Counter(p for r in rows if (p := answer_problem(r.answer, r.language)))
    yield dg.Output(
        output_for_partitions(frames),
        metadata={
            **partitioned_frame_metadata(frames, ["tag_path", "difficulty", "truncated", "answer"]),
            **generation_metadata(result.stats),
            "truncated_answers": sum(r.truncated for r in rows),
            "flagged_by_reason": dict(flagged),
        },
    )
    yield dg.AssetCheckResult(
        check_name="not_empty", passed=not empty, metadata={"empty_partitions": empty}
    )
    yield dg.AssetCheckResult(
        check_name="parents_are_kept_questions",
        passed=not orphans,
        metadata={"answers_without_kept_parent": {k: len(v) for k, v in orphans.items()}},
    )
