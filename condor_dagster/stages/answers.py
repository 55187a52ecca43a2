"""The shared answer stage: one answer per kept question of a dedup asset (Condor Void's draft
answers; another method passes its own prompt and template values)."""

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.core.answers import (
    PROMPT,
    AnswerJob,
    DraftAnswerRow,
    PromptValues,
    answer_jobs,
    answer_rows,
    question_values,
)
from condor_dagster.core.llm import SamplingParams
from condor_dagster.core.prompts import code_version, prompts_sha
from condor_dagster.core.rows import drop_metadata, frames_by_partition, origin_type
from condor_dagster.stages.metadata import generation_metadata, partitioned_frame_metadata
from condor_dagster.stages.partitions import (
    GPU_POOL,
    inputs_by_partition,
    llm_for_role,
    output_for_partitions,
    partitioned_stage,
    run_started_at,
)


class DraftAnswersConfig(dg.Config):
    """Answer generation settings."""

    temperature: float = Field(default=0.7, ge=0.0)
    """Sampling temperature."""
    max_tokens: int = Field(default=1024, ge=16)
    """Completion budget of one answer; longer answers are flagged truncated."""


def answers_stage(
    *,
    key_prefix: Sequence[str],
    partitions_def: dg.PartitionsDefinition,
    upstream: dg.AssetKey,
    group: str,
    id_prefix: str,
    name: str = "draft_answers",
    prompt: str = PROMPT,
    values: PromptValues = question_values,
    role: str = "llm",
    config_class: type[DraftAnswersConfig] = DraftAnswersConfig,
    extra_ins: Mapping[str, dg.AssetKey] | None = None,
    values_from: Callable[[Mapping[str, Any]], PromptValues] | None = None,
) -> dg.AssetsDefinition:
    """An answer asset over `upstream` (a dedup asset: rows with `kept` and `text`); rows get
    ids `<id_prefix>-...` and the LLM of `role`; `config_class` (a subclass of
    DraftAnswersConfig) sets the method's own defaults. `extra_ins` (input name -> key) are
    further inputs, such as unpartitioned demonstrations: `values_from` gets them loaded (by
    name) and returns the template values function, which then replaces `values`."""
    version = code_version([prompts_sha(prompt)], config_class().model_dump())

    def answers(
        context: dg.AssetExecutionContext, config: DraftAnswersConfig, upstream: Any, **extra: Any
    ) -> Iterator[dg.Output[Any] | dg.AssetCheckResult]:
        """Answers with the question id as parent, finish_reason, tokens, a truncation flag
        and the drop reason the shared filters give the answer as it stands."""
        row_values = values_from(extra) if values_from is not None else values
        questions = inputs_by_partition(context, upstream)
        keys = list(context.partition_keys)
        sampling = SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens)
        jobs: list[AnswerJob] = [
            job
            for key in keys
            for job in answer_jobs(questions[key], sampling, prompt=prompt, values=row_values)
        ]
        context.log.info(f"{name}: {len(jobs)} questions across {len(keys)} partitions")
        result = llm_for_role(context, role).generate(
            [job.request for job in jobs],
            progress=lambda done, total, _: context.log.info(f"{name}: {done}/{total} done"),
        )
        rows = answer_rows(
            jobs,
            result.completions,
            id_prefix=id_prefix,
            run_id=context.run.run_id,
            now=run_started_at(context),
        )
        origin = origin_type(questions[keys[0]])
        frames = frames_by_partition(rows, keys, DraftAnswerRow, origin=origin)

        kept_ids = {k: set(questions[k].filter(pl.col("kept"))["id"].to_list()) for k in keys}
        orphans = {
            k: sorted(set(f["parent_id"].to_list()) - kept_ids[k]) for k, f in frames.items()
        }
        orphans = {k: v for k, v in orphans.items() if v}
        empty = [k for k, f in frames.items() if f.height == 0]
        yield dg.Output(
            output_for_partitions(context, frames),
            metadata={
                **partitioned_frame_metadata(frames, ["truncated", "drop_reason", "answer"]),
                **generation_metadata(result.stats),
                **drop_metadata(r.drop_reason for r in rows),
                "truncated_answers": sum(r.truncated for r in rows),
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

    # Dagster reads the config schema from the annotation: the method's own defaults.
    answers.__annotations__["config"] = config_class
    return partitioned_stage(
        name=name,
        key_prefix=key_prefix,
        partitions_def=partitions_def,
        group=group,
        ins={"upstream": upstream, **(extra_ins or {})},
        kinds={"vllm", "parquet"},
        pool=GPU_POOL,
        code_version=version,
        checks=["not_empty", "parents_are_kept_questions"],
        required_resource_keys={role},
    )(answers)
