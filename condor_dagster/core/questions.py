"""Condor Void, pure part: question requests per (tag, task, sample) and answer requests per
kept question, and the rows made from their completions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from condor_dagster.core.language import PromptLanguage, prompt_language
from condor_dagster.core.llm import Completion, LLMRequest, SamplingParams
from condor_dagster.core.prompts import TASK_DESCRIPTIONS, load_prompt, parse_question_markup
from condor_dagster.core.quality import question_problem
from condor_dagster.core.records import (
    DIFFICULTIES,
    TASK_TYPES,
    DraftAnswerRow,
    Lineage,
    QuestionRow,
    QuestionTriple,
    content_id,
)


@dataclass(frozen=True)
class Tag:
    """A leaf of the knowledge tree, as the question stage needs it."""

    tag_id: str
    path_text: str
    language: str

    @property
    def prompt_language(self) -> PromptLanguage:
        return prompt_language(self.language)


@dataclass(frozen=True)
class QuestionJob:
    tag: Tag
    task: str
    sample_index: int
    request: LLMRequest


def question_jobs(
    tags: Sequence[Tag], samples_per_task: int, sampling: SamplingParams, structured: bool
) -> list[QuestionJob]:
    """One request per (tag, task type, sample): each yields an easy/medium/hard triple."""
    jobs = []
    for tag in tags:
        prompt = load_prompt("questions", tag.prompt_language)
        for task in TASK_TYPES:
            name, description = TASK_DESCRIPTIONS[tag.prompt_language][task]
            messages = prompt.render(
                tag_path=tag.path_text, task_name=name, task_description=description
            )
            for sample in range(samples_per_task):
                request = LLMRequest(
                    messages=messages,
                    sampling=sampling,
                    schema=QuestionTriple if structured else None,
                    sample_index=sample,
                )
                jobs.append(QuestionJob(tag, task, sample, request))
    return jobs


def _triple(completion: Completion, structured: bool) -> tuple[dict[str, str] | None, str | None]:
    """(difficulty -> text, error) from a completion, by schema or by the [Easy] markup."""
    if structured:
        if isinstance(completion.parsed, QuestionTriple):
            return completion.parsed.model_dump(), None
        return None, completion.parse_error or "no parsed value"
    if completion.truncated:
        return None, "truncated: generation hit max_tokens"
    parsed = parse_question_markup(completion.text)
    return (parsed, None) if parsed else (None, "markup: [Easy]/[Medium]/[Hard] not all found")


def question_rows(
    jobs: Sequence[QuestionJob],
    completions: Sequence[Completion],
    *,
    structured: bool,
    run_id: str,
    now: dt.datetime,
) -> list[QuestionRow]:
    """Three rows per job. A failed generation still gives its three rows, with an empty text
    and a drop_reason (parse_failed / truncated), so nothing disappears silently. A parsed text
    that asks nothing or repeats itself keeps its text with drop_reason not_a_question /
    degenerate_repetition (`quality.question_problem`)."""
    rows = []
    for job, completion in zip(jobs, completions, strict=True):
        prompt = load_prompt("questions", job.tag.prompt_language)
        lineage = Lineage.of(completion, job.request, prompt, run_id, now)
        triple, error = _triple(completion, structured)
        for difficulty in DIFFICULTIES:
            text = (triple or {}).get(difficulty, "").strip()
            reason: str | None
            if triple is None:
                reason = "truncated" if completion.truncated else "parse_failed"
            else:
                reason = question_problem(text, job.tag.language) if text else "empty_question"
            rows.append(
                QuestionRow(
                    id=content_id(
                        "q", job.tag.tag_id, job.task, job.sample_index, difficulty, text
                    ),
                    parent_id=job.tag.tag_id,
                    tag_id=job.tag.tag_id,
                    tag_path=job.tag.path_text,
                    task=job.task,
                    difficulty=difficulty,
                    sample_index=job.sample_index,
                    language=job.tag.language,
                    text=text,
                    drop_reason=reason,
                    error=error if triple is None else None,
                    raw_text=completion.text if triple is None else None,
                    lineage=lineage,
                )
            )
    return rows


@dataclass(frozen=True)
class AnswerJob:
    question_id: str
    tag_id: str
    tag_path: str
    task: str
    difficulty: str
    language: str
    question: str
    request: LLMRequest


def answer_job(
    *,
    question_id: str,
    tag_id: str,
    tag_path: str,
    task: str,
    difficulty: str,
    language: str,
    question: str,
    sampling: SamplingParams,
) -> AnswerJob:
    prompt = load_prompt("answer", prompt_language(language))
    request = LLMRequest(messages=prompt.render(question=question), sampling=sampling)
    return AnswerJob(question_id, tag_id, tag_path, task, difficulty, language, question, request)


def answer_jobs(questions: pl.DataFrame, sampling: SamplingParams) -> list[AnswerJob]:
    """One answer job per kept question of a deduplicated_questions frame (the requests
    draft_answers sends; the benchmark builds its raw side with this too)."""
    return [
        answer_job(
            question_id=row["id"],
            tag_id=row["tag_id"],
            tag_path=row["tag_path"],
            task=row["task"],
            difficulty=row["difficulty"],
            language=row["language"],
            question=row["text"],
            sampling=sampling,
        )
        for row in questions.filter(pl.col("kept")).iter_rows(named=True)
    ]


def answer_rows(
    jobs: Sequence[AnswerJob], completions: Sequence[Completion], *, run_id: str, now: dt.datetime
) -> list[DraftAnswerRow]:
    rows = []
    for job, completion in zip(jobs, completions, strict=True):
        prompt = load_prompt("answer", prompt_language(job.language))
        lineage = Lineage.of(completion, job.request, prompt, run_id, now)
        rows.append(
            DraftAnswerRow(
                id=content_id("a", job.question_id, completion.text),
                parent_id=job.question_id,
                tag_id=job.tag_id,
                tag_path=job.tag_path,
                task=job.task,
                difficulty=job.difficulty,
                language=job.language,
                question=job.question,
                answer=completion.text,
                truncated=completion.truncated,
                lineage=lineage,
            )
        )
    return rows
