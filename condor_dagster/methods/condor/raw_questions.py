"""raw_questions[tag]: 7 task types x (easy, medium, hard) per tag (Condor Void)."""

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.core.llm import SamplingParams
from condor_dagster.core.prompts import code_version, prompts_sha
from condor_dagster.core.rows import drop_metadata, frames_by_partition
from condor_dagster.methods.condor.partitions import tag_stage
from condor_dagster.methods.condor.questions import PROMPT, Tag, question_jobs, question_rows
from condor_dagster.methods.condor.records import QuestionRow
from condor_dagster.resources.llm import LLMResource
from condor_dagster.stages.metadata import generation_metadata, partitioned_frame_metadata
from condor_dagster.stages.partitions import GPU_POOL, output_for_partitions, run_started_at


class RawQuestionsConfig(dg.Config):
    """Question generation settings."""

    samples_per_task: int = Field(default=1, ge=1, le=50)
    """Generations per (tag, task); each yields an easy/medium/hard triple."""
    temperature: float = Field(default=0.8, ge=0.0)
    """Sampling temperature."""
    max_tokens: int = Field(default=512, ge=16)
    """Completion budget of one request (three questions)."""
    structured_output: bool = True
    """JSON schema output; False parses the "[Easy] ... [Medium] ... [Hard] ..." text form
    (for backends without structured output)."""
    max_parse_failure_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    """The check fails for a partition whose share of failed generations is above this."""


def _code_version() -> str:
    return code_version([prompts_sha(PROMPT)], RawQuestionsConfig().model_dump())


def tags_from_tree(tree: pl.DataFrame, keys: list[str]) -> list[Tag]:
    """The leaf tags named by `keys`; a key not among the tree's leaves is an error that says
    the tag left the taxonomy."""
    leaves = tree.filter(pl.col("is_leaf") & pl.col("node_id").is_in(keys))
    found = {row["node_id"]: row for row in leaves.iter_rows(named=True)}
    missing = [k for k in keys if k not in found]
    if missing:
        raise ValueError(
            f"tag partitions {missing} are not leaves of the latest knowledge_tree (removed from "
            "the taxonomy, or the tree was rebuilt); rematerialize knowledge_tree or drop them"
        )
    return [Tag(k, found[k]["path_text"], found[k]["language"]) for k in keys]


@tag_stage(
    "raw_questions",
    ins={"knowledge_tree": "knowledge_tree"},
    kinds={"vllm", "parquet"},
    pool=GPU_POOL,
    code_version=_code_version(),
    checks=["not_empty", "parse_failure_rate_below_bound"],
)
def raw_questions(
    context: dg.AssetExecutionContext,
    config: RawQuestionsConfig,
    llm: LLMResource,
    knowledge_tree: pl.DataFrame,
):
    """Questions per tag; failed generations are kept as rows with a drop_reason."""
    keys = list(context.partition_keys)
    tags = tags_from_tree(knowledge_tree, keys)
    sampling = SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens)
    jobs = question_jobs(tags, config.samples_per_task, sampling, config.structured_output)
    context.log.info(f"raw_questions: {len(jobs)} requests for {len(keys)} tag partitions")
    result = llm.generate(
        [job.request for job in jobs],
        progress=lambda done, total, _: context.log.info(f"raw_questions: {done}/{total} done"),
    )
    rows = question_rows(
        jobs,
        result.completions,
        structured=config.structured_output,
        run_id=context.run.run_id,
        now=run_started_at(context),
    )
    frames = frames_by_partition(rows, keys, QuestionRow)

    failure_rate = {
        k: round(
            f.filter(pl.col("drop_reason").is_in(["parse_failed", "truncated"])).height
            / max(f.height, 1),
            4,
        )
        for k, f in frames.items()
    }
    over_bound = {k: r for k, r in failure_rate.items() if r > config.max_parse_failure_rate}
    empty = [k for k, f in frames.items() if f.filter(pl.col("drop_reason").is_null()).height == 0]
    yield dg.Output(
        output_for_partitions(context, frames),
        metadata={
            **partitioned_frame_metadata(frames, ["origin", "text"]),
            **generation_metadata(result.stats),
            **drop_metadata(r.drop_reason for r in rows),
        },
    )
    yield dg.AssetCheckResult(
        check_name="not_empty",
        passed=not empty,
        metadata={"partitions_without_usable_questions": empty},
    )
    yield dg.AssetCheckResult(
        check_name="parse_failure_rate_below_bound",
        passed=not over_bound,
        metadata={
            "bound": config.max_parse_failure_rate,
            "worst_rate": max(failure_rate.values(), default=0.0),
            "partitions_over_bound": over_bound,
        },
    )
