"""The shared Self-Reflection Refinement stage (Condor Refine): critique, then rewrite, every
answer of an answer asset; any method may run it over its answers as a variant."""

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from condor_dagster.core.llm import GenerationStats, LLMRequest, SamplingParams
from condor_dagster.core.prompts import code_version, prompts_sha
from condor_dagster.core.refine import (
    CRITIQUE_PROMPT,
    REWRITE_PROMPT,
    DraftToRefine,
    RefinedAnswerRow,
    refine_answers,
)
from condor_dagster.core.rows import frames_by_partition, origin_type
from condor_dagster.stages.metadata import generation_metadata, partitioned_frame_metadata
from condor_dagster.stages.partitions import (
    GPU_POOL,
    inputs_by_partition,
    llm_for_role,
    output_for_partitions,
    partitioned_stage,
    run_started_at,
)


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


def refine_stage(
    *,
    key_prefix: Sequence[str],
    partitions_def: dg.PartitionsDefinition,
    upstream: dg.AssetKey,
    group: str,
    id_prefix: str,
    name: str = "refined_answers",
    role: str = "llm",
) -> dg.AssetsDefinition:
    """A refinement asset over `upstream` (an answer asset); rows get ids `<id_prefix>-...`."""
    version = code_version(
        [prompts_sha(CRITIQUE_PROMPT), prompts_sha(REWRITE_PROMPT)],
        RefinedAnswersConfig().model_dump(),
    )

    @partitioned_stage(
        name=name,
        key_prefix=key_prefix,
        partitions_def=partitions_def,
        group=group,
        ins={"upstream": upstream},
        kinds={"vllm", "parquet"},
        pool=GPU_POOL,
        code_version=version,
        checks=["not_empty", "parents_are_draft_answers"],
        required_resource_keys={role},
    )
    def refined(
        context: dg.AssetExecutionContext, config: RefinedAnswersConfig, upstream: Any
    ) -> Iterator[dg.Output[Any] | dg.AssetCheckResult]:
        """Each answer with its critique(s) and rewritten answer; every round is kept."""
        drafts = inputs_by_partition(context, upstream)
        keys = list(context.partition_keys)
        todo = [DraftToRefine(row) for key in keys for row in drafts[key].iter_rows(named=True)]
        context.log.info(f"{name}: {len(todo)} answers across {len(keys)} partitions")
        stats: list[GenerationStats] = []
        llm = llm_for_role(context, role)

        def generate(requests: Sequence[LLMRequest]) -> Any:
            result = llm.generate(requests)
            stats.append(result.stats)
            context.log.info(f"{name}: {len(requests)} requests done")
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
            id_prefix=id_prefix,
            run_id=context.run.run_id,
            now=run_started_at(context),
        )
        origin = origin_type(drafts[keys[0]])
        frames = frames_by_partition(rows, keys, RefinedAnswerRow, origin=origin)
        draft_ids = {k: set(drafts[k]["id"].to_list()) for k in keys}
        orphans = {
            k: int((~f["parent_id"].is_in(list(draft_ids[k]))).sum()) for k, f in frames.items()
        }
        empty = [k for k, f in frames.items() if f.height == 0]
        # Rewrites that were not used, by why: a quality gate's reason, or rewrite_error for a
        # rejected or empty completion. The previous answer stood in each case.
        rewrites = [rnd for r in rows for rnd in r.rounds if rnd.answer_lineage is not None]
        refused = Counter(
            rnd.rewrite_problem or "rewrite_error" for rnd in rewrites if rnd.answer is None
        )
        yield dg.Output(
            output_for_partitions(context, frames),
            metadata={
                **partitioned_frame_metadata(frames, ["rounds_run", "stop_reason", "answer"]),
                **generation_metadata(stats),
                "rounds_run": dict(Counter(r.rounds_run for r in rows)),
                "stop_reasons": dict(Counter(r.stop_reason for r in rows)),
                "early_stops": sum(r.stop_reason == "no_weaknesses" for r in rows),
                "truncated_answers": sum(r.truncated for r in rows),
                "kept": sum(r.drop_reason is None for r in rows),
                "dropped_by_reason": dict(Counter(r.drop_reason for r in rows if r.drop_reason)),
                "rewrites_used": sum(rnd.answer is not None for rnd in rewrites),
                "rewrites_refused_by_reason": dict(refused),
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

    return refined
