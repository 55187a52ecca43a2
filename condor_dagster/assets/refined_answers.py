"""refined_answers[tag]: Self-Reflection Refinement of every draft answer (Condor Refine)."""

from collections import Counter

import dagster as dg
from pydantic import Field

from condor_dagster.assets.metadata import generation_metadata, partitioned_frame_metadata
from condor_dagster.assets.partitions import (
    GPU_POOL,
    inputs_by_partition,
    output_for_partitions,
    per_tag_asset,
    run_started_at,
)
from condor_dagster.core.llm import GenerationStats, SamplingParams
from condor_dagster.core.prompts import code_version, prompts_sha
from condor_dagster.core.records import RefinedAnswerRow, frames_by_tag
from condor_dagster.core.refine import DraftToRefine, refine_answers
from condor_dagster.resources.llm import LLMResource


class RefinedAnswersConfig(dg.Config):
    """Self-Reflection Refinement settings."""

    refine_rounds: int = Field(default=1, ge=1, le=5)
    """Critique -> rewrite rounds (the paper documents one)."""
    stop_when_no_weaknesses: bool = True
    """End a row's refinement early when its critique lists no weakness."""
    critique_temperature: float = Field(default=0.3, ge=0.0)
    """Sampling temperature of the critique."""
    critique_max_tokens: int = Field(default=768, ge=16)
    """Completion budget of one critique."""
    temperature: float = Field(default=0.7, ge=0.0)
    """Sampling temperature of the rewrite."""
    max_tokens: int = Field(default=1024, ge=16)
    """Completion budget of one rewritten answer."""


def _code_version() -> str:
    shas = [prompts_sha("critique"), prompts_sha("refine")]
    return code_version(shas, RefinedAnswersConfig().model_dump())


@per_tag_asset(
    kinds={"vllm", "parquet"},
    pool=GPU_POOL,
    code_version=_code_version(),
    checks=["not_empty", "parents_are_draft_answers"],
    group="condor_refine",
)
def refined_answers(
    context: dg.AssetExecutionContext,
    config: RefinedAnswersConfig,
    llm: LLMResource,
    draft_answers,
):
    """Each draft with its critique(s) and rewritten answer; every round is kept in the row."""
    drafts = inputs_by_partition(context, draft_answers)
    keys = list(context.partition_keys)
    todo = [
        DraftToRefine(
            draft_id=row["id"],
            question_id=row["parent_id"],
            tag_id=row["tag_id"],
            tag_path=row["tag_path"],
            task=row["task"],
            difficulty=row["difficulty"],
            language=row["language"],
            question=row["question"],
            draft_answer=row["answer"],
            draft_truncated=row["truncated"],
        )
        for key in keys
        for row in drafts[key].iter_rows(named=True)
    ]
    context.log.info(f"refined_answers: {len(todo)} drafts across {len(keys)} tag partitions")
    stats: list[GenerationStats] = []

    def generate(requests):
        result = llm.generate(requests)
        stats.append(result.stats)
        context.log.info(f"refined_answers: {len(requests)} requests done")
        return result.completions

    rows = refine_answers(
        todo,
        generate,
        rounds=config.refine_rounds,
        stop_when_no_weaknesses=config.stop_when_no_weaknesses,
        critique_sampling=SamplingParams(
            temperature=config.critique_temperature, max_tokens=config.critique_max_tokens
        ),
        answer_sampling=SamplingParams(
            temperature=config.temperature, max_tokens=config.max_tokens
        ),
        run_id=context.run.run_id,
        now=run_started_at(context),
    )
    frames = frames_by_tag(rows, keys, RefinedAnswerRow)
    draft_ids = {k: set(drafts[k]["id"].to_list()) for k in keys}
    orphans = {k: int((~f["parent_id"].is_in(list(draft_ids[k]))).sum()) for k, f in frames.items()}
    empty = [k for k, f in frames.items() if f.height == 0]
    # Rewrites that were not used, by why: a quality gate's reason, or rewrite_error for a
    # rejected or empty completion. The previous answer stood in each case.
    rewrites = [rnd for r in rows for rnd in r.rounds if rnd.answer_lineage is not None]
    refused = Counter(
        rnd.rewrite_problem or "rewrite_error" for rnd in rewrites if rnd.answer is None
    )
    yield dg.Output(
        output_for_partitions(frames),
        metadata={
            **partitioned_frame_metadata(
                frames, ["tag_path", "rounds_run", "stop_reason", "answer"]
            ),
            **generation_metadata(stats),
            "rounds_run": dict(Counter(r.rounds_run for r in rows)),
            "stop_reasons": dict(Counter(r.stop_reason for r in rows)),
            "early_stops": sum(r.stop_reason == "no_weaknesses" for r in rows),
            "truncated_answers": sum(r.truncated for r in rows),
            "kept": sum(rnd.answer is not None for rnd in rewrites),
            "dropped_by_reason": dict(refused),
            "preambles_stripped": sum(
                rnd.answer is not None and rnd.stripped_preamble is not None for rnd in rewrites
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name="not_empty", passed=not empty, metadata={"empty_partitions": empty}
    )
    yield dg.AssetCheckResult(
        check_name="parents_are_draft_answers",
        passed=not any(orphans.values()),
        metadata={"rows_without_draft_parent": {k: v for k, v in orphans.items() if v}},
    )
