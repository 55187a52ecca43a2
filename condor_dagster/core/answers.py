"""The shared answer stage, pure part: one request per kept question of any method, and the
answer rows made from their completions (Condor Void's draft answers; AugCon's grounded answers
use it with their own prompt and values)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from condor_dagster.core.language import prompt_language
from condor_dagster.core.llm import Completion, LLMRequest, SamplingParams
from condor_dagster.core.prompts import load_prompt
from condor_dagster.core.quality import answer_drop_reason
from condor_dagster.core.rows import DropReason, Lineage, SampleRow, content_id, inherited

PROMPT = "shared/answer"

# The template values of a question row (default: the question text as $question).
PromptValues = Callable[[Mapping[str, Any]], Mapping[str, object]]


def question_values(row: Mapping[str, Any]) -> Mapping[str, object]:
    return {"question": row["text"]}


class DraftAnswerRow(SampleRow):
    """One answer per kept question; parent_id is the question."""

    question: str
    answer: str
    truncated: bool
    """The answer hit max_tokens; flagged, filtered at export."""
    drop_reason: DropReason | None
    """Why this answer cannot be a sample as it stands (rejected, empty_answer, truncated, a
    quality gate); refinement may still fix it, so the row stays."""
    lineage: Lineage


@dataclass(frozen=True)
class AnswerJob:
    """One answer request and the question row it answers."""

    question: Mapping[str, Any]
    """The question row (id, method, partition_key, language, origin, text, ...)."""
    prompt: str
    request: LLMRequest


def answer_jobs(
    questions: pl.DataFrame,
    sampling: SamplingParams,
    *,
    prompt: str = PROMPT,
    values: PromptValues = question_values,
) -> list[AnswerJob]:
    """One job per kept question of a deduplicated frame (the requests the answer stage sends;
    the benchmark builds its raw side with this too)."""
    jobs = []
    for row in questions.filter(pl.col("kept")).iter_rows(named=True):
        template = load_prompt(prompt, prompt_language(row["language"]))
        request = LLMRequest(messages=template.render(**values(row)), sampling=sampling)
        jobs.append(AnswerJob(row, prompt, request))
    return jobs


def answer_rows(
    jobs: Sequence[AnswerJob],
    completions: Sequence[Completion],
    *,
    id_prefix: str,
    run_id: str,
    now: dt.datetime,
) -> list[DraftAnswerRow]:
    rows = []
    for job, completion in zip(jobs, completions, strict=True):
        template = load_prompt(job.prompt, prompt_language(job.question["language"]))
        rows.append(
            DraftAnswerRow(
                id=content_id(id_prefix, job.question["id"], completion.text),
                **inherited(job.question),
                question=job.question["text"],
                answer=completion.text,
                truncated=completion.truncated,
                drop_reason=answer_drop_reason(
                    completion.text,
                    completion.truncated,
                    completion.finish_reason,
                    language=job.question["language"],
                ),
                lineage=Lineage.of(completion, job.request, template, run_id, now),
            )
        )
    return rows
