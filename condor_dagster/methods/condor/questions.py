"""Condor's questions, pure part: one request per (tag, task, sample), each asking for an
easy/medium/hard triple, and the rows made from their completions."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from condor_dagster.core.language import PromptLanguage, prompt_language
from condor_dagster.core.llm import Completion, LLMRequest, SamplingParams
from condor_dagster.core.prompts import load_prompt
from condor_dagster.core.quality import question_problem
from condor_dagster.core.rows import DropReason, Lineage, content_id
from condor_dagster.methods.condor.records import (
    DIFFICULTIES,
    METHOD,
    TASK_TYPES,
    CondorOrigin,
    QuestionRow,
    QuestionTriple,
)

PROMPT = "condor/questions"
# The 7 Condor task types, described for the question prompt.
TASK_DESCRIPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "role_playing": ("Role Playing", "the user asks the assistant to act as a character"),
        "daily_chat": ("Daily Chat", "casual conversation a person would start"),
        "domain_knowledge_qa": ("Domain Knowledge QA", "questions that need expert knowledge"),
        "given_material_processing": (
            "Given Material Processing",
            "analyse or summarise text or data that the question itself includes",
        ),
        "response_format_control": (
            "Response Format Control",
            "the request sets explicit format, length or style constraints",
        ),
        "view": ("View", "ask for an opinion or a judgement"),
        "creation": ("Creation", "write an article, story, poem or design"),
    },
    "zh": {
        "role_playing": ("角色扮演", "用户请助手扮演某个角色"),
        "daily_chat": ("日常闲聊", "普通人会发起的日常对话"),
        "domain_knowledge_qa": ("领域知识问答", "需要专业知识才能回答的问题"),
        "given_material_processing": ("给定材料处理", "分析或总结问题中给出的文本或数据"),
        "response_format_control": ("回复格式控制", "请求中有明确的格式、长度或风格要求"),
        "view": ("观点", "询问看法或评价"),
        "creation": ("创作", "撰写文章、故事、诗歌或设计方案"),
    },
}


_MARKUP = re.compile(r"\[(easy|medium|hard)\]\s*(.*?)(?=\[(?:easy|medium|hard)\]|\Z)", re.I | re.S)


def parse_question_markup(text: str) -> dict[str, str] | None:
    """Parse the fallback form "[Easy] ... [Medium] ... [Hard] ..."; None unless all three
    are present."""
    found: dict[str, str] = {}
    for level, body in _MARKUP.findall(text):
        found.setdefault(level.lower(), body.strip())
    if set(found) != {"easy", "medium", "hard"}:
        return None
    return found


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
        prompt = load_prompt(PROMPT, tag.prompt_language)
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
        prompt = load_prompt(PROMPT, job.tag.prompt_language)
        lineage = Lineage.of(completion, job.request, prompt, run_id, now)
        triple, error = _triple(completion, structured)
        for difficulty in DIFFICULTIES:
            text = (triple or {}).get(difficulty, "").strip()
            reason: DropReason | None
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
                    method=METHOD,
                    partition_key=job.tag.tag_id,
                    language=job.tag.language,
                    origin=CondorOrigin(
                        tag_path=job.tag.path_text, task=job.task, difficulty=difficulty
                    ),
                    sample_index=job.sample_index,
                    text=text,
                    drop_reason=reason,
                    error=error if triple is None else None,
                    raw_text=completion.text if triple is None else None,
                    lineage=lineage,
                )
            )
    return rows
