"""augcon/answer_demos and augcon/grounded_answers: demonstrations chosen by self-check, then
one answer per kept question, grounded in its context and shown those demonstrations."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.core.drop_reasons import drop_metadata
from condor_dagster.core.language import prompt_language
from condor_dagster.core.llm import Completion, GenerationStats, LLMRequest, SamplingParams
from condor_dagster.core.prompts import code_version, load_prompt, prompts_sha
from condor_dagster.core.rows import Lineage, content_id, rows_to_frame
from condor_dagster.methods.augcon.demos import (
    ANSWER_PROMPT,
    ANSWER_TEMPERATURE,
    DEMOS_KEPT,
    SELF_CHECK_PROMPT,
    demo_answer_requests,
    format_demos,
    judge_requests,
    select_demos,
)
from condor_dagster.methods.augcon.examples import QAExample
from condor_dagster.methods.augcon.partitions import GROUP, KEY_PREFIX, key
from condor_dagster.methods.augcon.records import AnswerDemoRow
from condor_dagster.methods.augcon.tree_assets import examples_by_language
from condor_dagster.methods.corpus.partitions import corpus_shards
from condor_dagster.resources.llm import LLMResource
from condor_dagster.stages.answers import DraftAnswersConfig, answers_stage
from condor_dagster.stages.metadata import frame_metadata, generation_metadata
from condor_dagster.stages.partitions import GPU_POOL, run_started_at


class AnswerDemosConfig(dg.Config):
    """The self-check that picks the answer demonstrations."""

    examples_path: str | None = None
    """JSONL of {context, question, answer}; None uses the shipped examples per language."""
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"])
    """Prompt languages to choose demonstrations for."""
    keep: int = Field(default=DEMOS_KEPT, ge=0, le=20)
    """Demonstrations kept per language at most (AugCon: 3)."""
    temperature: float = Field(default=ANSWER_TEMPERATURE, ge=0.0)
    """Sampling temperature of the answers and the judgments (AugCon: 0.2)."""
    max_tokens: int = Field(default=384, ge=16)
    """Completion budget of one answer."""
    judge_max_tokens: int = Field(default=24, ge=8)
    """Completion budget of one verdict ({"verdict": "yes"} is about 8 tokens)."""


def _demos_version() -> str:
    shas = [prompts_sha(ANSWER_PROMPT), prompts_sha(SELF_CHECK_PROMPT)]
    return code_version(shas, AnswerDemosConfig().model_dump())


@dg.asset(
    key=key("answer_demos"),
    group_name=GROUP,
    kinds={"vllm", "parquet"},
    code_version=_demos_version(),
    pool=GPU_POOL,
    description="The QA examples the model answers right by its own judgment (yes/no).",
)
def answer_demos(
    context: dg.AssetExecutionContext, config: AnswerDemosConfig, llm: LLMResource
) -> dg.Output[pl.DataFrame]:
    """Every example with the model's answer, the verdict and whether it became a demo."""
    languages: list[str] = sorted({prompt_language(lang) for lang in config.languages})
    examples = examples_by_language(config.examples_path)
    answer_sampling = SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens)
    judge_sampling = answer_sampling.model_copy(update={"max_tokens": config.judge_max_tokens})
    answer_requests = {
        lang: demo_answer_requests(examples[lang], language=lang, sampling=answer_sampling)
        for lang in languages
    }
    stats: list[GenerationStats] = []

    def generate(requests: Mapping[str, list[LLMRequest]]) -> dict[str, Sequence[Completion]]:
        """One engine call over every language's requests, the completions split back."""
        result = llm.generate([r for lang in languages for r in requests[lang]])
        stats.append(result.stats)
        completions: dict[str, Sequence[Completion]] = {}
        at = 0
        for lang in languages:
            completions[lang] = result.completions[at : at + len(requests[lang])]
            at += len(requests[lang])
        return completions

    answers = generate(answer_requests)
    judge = {
        lang: judge_requests(examples[lang], answers[lang], language=lang, sampling=judge_sampling)
        for lang in languages
    }
    judged = generate(judge)
    run_id, now = context.run.run_id, run_started_at(context)
    rows = []
    for lang in languages:
        verdicts = judged[lang]
        decisions = select_demos(examples[lang], answers[lang], verdicts, keep=config.keep)
        answer_template = load_prompt(ANSWER_PROMPT, lang)
        judge_template = load_prompt(SELF_CHECK_PROMPT, lang)
        for n, decision in enumerate(decisions):
            e = decision.example
            rows.append(
                AnswerDemoRow(
                    id=content_id("ad", lang, e.context, e.question, decision.answer),
                    language=lang,
                    position=n,
                    context=e.context,
                    question=e.question,
                    reference=e.answer,
                    answer=decision.answer,
                    verdict=decision.verdict,
                    kept=decision.kept,
                    drop_reason=decision.reason,
                    answer_lineage=Lineage.of(
                        answers[lang][n], answer_requests[lang][n], answer_template, run_id, now
                    ),
                    judge_lineage=Lineage.of(
                        verdicts[n], judge[lang][n], judge_template, run_id, now
                    ),
                )
            )
    frame = rows_to_frame(rows, AnswerDemoRow)
    return dg.Output(
        frame,
        metadata={
            **frame_metadata(frame, ["language", "verdict", "drop_reason", "question"]),
            **generation_metadata(stats),
            **drop_metadata(r.drop_reason for r in rows),
            "demos_by_language": {
                lang: sum(r.kept for r in rows if r.language == lang) for lang in languages
            },
        },
    )


def demos_by_language(frame: pl.DataFrame) -> dict[str, list[QAExample]]:
    """The kept demonstrations of an augcon/answer_demos output, per prompt language."""
    kept = frame.filter(pl.col("kept")).sort("language", "position")
    demos: dict[str, list[QAExample]] = {"en": [], "zh": []}
    for row in kept.iter_rows(named=True):
        demos[row["language"]].append(
            QAExample(context=row["context"], question=row["question"], answer=row["reference"])
        )
    return demos


def grounded_values(
    inputs: Mapping[str, Any],
) -> Callable[[Mapping[str, Any]], Mapping[str, object]]:
    """The answer prompt's values of a question row: its context, itself and the demos of its
    language."""
    blocks = {
        lang: format_demos(demos, language=lang)
        for lang, demos in demos_by_language(inputs["demos"]).items()
    }

    def values(row: Mapping[str, Any]) -> Mapping[str, object]:
        return {
            "context": row["origin"]["context"],
            "question": row["text"],
            "demos": blocks[prompt_language(row["language"])],
        }

    return values


class GroundedAnswersConfig(DraftAnswersConfig):
    """Grounded answer settings (AugCon's temperature)."""

    temperature: float = Field(default=ANSWER_TEMPERATURE, ge=0.0)
    """Sampling temperature (AugCon: 0.2)."""
    max_tokens: int = Field(default=512, ge=16)
    """Completion budget of one answer; longer answers are flagged truncated."""


grounded_answers = answers_stage(
    key_prefix=KEY_PREFIX,
    partitions_def=corpus_shards,
    group=GROUP,
    upstream=key("deduplicated_questions"),
    id_prefix="ca",
    name="grounded_answers",
    prompt=ANSWER_PROMPT,
    config_class=GroundedAnswersConfig,
    extra_ins={"demos": key("answer_demos")},
    values_from=grounded_values,
)
