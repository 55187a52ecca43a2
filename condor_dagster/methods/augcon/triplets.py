"""The query scorer's training data (AugCon), pure part: per chunk, a question from the full prompt
(detailed instruction, three examples) and one from a degraded prompt, as (context, positive,
negative). Only the prompt differs within a pair; hashes pick chunks and examples, so reruns hit
the response cache."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, Field

from condor_dagster.core.language import prompt_language
from condor_dagster.core.llm import Completion, LLMRequest, SamplingParams, parse_structured
from condor_dagster.core.prompts import load_prompt
from condor_dagster.core.quality import question_problem
from condor_dagster.core.rows import DropReason, Lineage, SampleRow, content_id, inherited
from condor_dagster.methods.augcon.examples import QAExample, format_examples
from condor_dagster.methods.augcon.records import AugconOrigin
from condor_dagster.methods.augcon.scorer import Degradation, Triplet

QUESTION_PROMPT = "augcon/question"
VAGUE_PROMPT = "augcon/vague_question"
DEGRADATIONS: tuple[Degradation, ...] = get_args(Degradation)
FULL_EXAMPLES = 3  # examples the full prompt shows (the paper's three)
QUESTION_TEMPERATURE = 0.85  # the paper's temperature for these questions (callers' sampling)
Chunk = Mapping[str, Any]  # an augcon/chunks row (a ChunkRow as a dict)


class QuestionOutput(BaseModel):
    """Structured output of the question prompts (bounded, so guided decoding ends in time)."""

    question: str = Field(max_length=300)


class TripletRow(SampleRow):
    """augcon/triplets: one (context, positive, negative) candidate; parent_id is the chunk. A
    question is "" when truncated or unparsed. drop_reason: truncated, parse_failed, empty_question,
    a quality problem, same_question (a tie teaches the scorer nothing); None when usable."""

    origin: AugconOrigin  # type: ignore[assignment]
    context: str
    positive: str
    negative: str
    degradation: Degradation
    drop_reason: DropReason | None
    positive_lineage: Lineage
    negative_lineage: Lineage


@dataclass(frozen=True)
class TripletJob:
    """The two requests of one triplet: the same chunk, the full and a degraded prompt."""

    chunk: Chunk
    degradation: Degradation
    positive_request: LLMRequest
    negative_request: LLMRequest


def negative_prompt(degradation: Degradation) -> str:
    """The negative's template: one_example keeps the detailed instruction, the others don't."""
    return QUESTION_PROMPT if degradation == "one_example" else VAGUE_PROMPT


def _hash(*parts: object) -> int:
    return int(content_id("h", *parts)[2:10], 16) & 0x7FFF_FFFF  # an int32 seed for any engine


def triplet_jobs(
    chunks: Sequence[Chunk],
    examples: Sequence[QAExample],
    *,
    per_type: int = 500,
    sampling: SamplingParams,
    structured: bool = True,
    seed: int = 0,
) -> list[TripletJob]:
    """Up to `per_type` jobs per degradation, chunks ranked by a hash of (seed, degradation, id).
    Examples rotate by the chunk's hash so prompts vary; the negative keeps them (or the first),
    so only the prompt differs; each request has its own seed, so a negative is a fresh draw."""
    if not examples:
        raise ValueError("triplet_jobs needs at least one QA example for the prompts")

    def request(name: str, chunk: Chunk, shown: list[QAExample], *key: str) -> LLMRequest:
        block = format_examples(shown, language=chunk["language"], with_answers=False)
        template = load_prompt(name, prompt_language(chunk["language"]))
        return LLMRequest(
            messages=template.render(examples=block, context=chunk["text"]),
            sampling=sampling.model_copy(update={"seed": _hash(seed, *key, chunk["id"])}),
            schema=QuestionOutput if structured else None,
        )

    jobs, count = [], min(FULL_EXAMPLES, len(examples))
    for degradation in DEGRADATIONS:
        ranked = sorted(chunks, key=lambda c: (_hash(seed, degradation, c["id"]), c["id"]))
        for chunk in ranked[: max(per_type, 0)]:
            start = _hash(seed, "examples", chunk["id"]) % len(examples)
            shown = [examples[(start + i) % len(examples)] for i in range(count)]
            fewer = shown if degradation == "vague_instruction" else shown[:1]
            positive = request(QUESTION_PROMPT, chunk, shown, "positive")
            negative = request(negative_prompt(degradation), chunk, fewer, "negative", degradation)
            jobs.append(TripletJob(chunk, degradation, positive, negative))
    return jobs


_LABEL = re.compile(r"^(?:question|问题)\s*[:：]\s*", re.IGNORECASE)


def parse_question(completion: Completion, *, structured: bool) -> str | None:
    """The parsed QuestionOutput's question; in text mode a JSON reply (small models send one
    anyway) or the first non-empty line, label stripped. "" if blank, None if nothing parsed."""
    parsed = completion.parsed
    if not structured and completion.text.strip().startswith("{"):
        parsed, _ = parse_structured(completion.text.strip(), "stop", QuestionOutput)
    elif not structured:
        line = next((ln.strip() for ln in completion.text.splitlines() if ln.strip()), "")
        return _LABEL.sub("", line).strip("\"'“” ")
    return parsed.question.strip() if isinstance(parsed, QuestionOutput) else None


def _drop_reason(pair: Sequence[Completion], qs: list[str | None], lang: str) -> DropReason | None:
    """The first reason the pair cannot train the scorer, or None."""
    if any(c.truncated for c in pair):
        return "truncated"
    if None in qs:
        return "parse_failed"
    positive, negative = (q or "" for q in qs)
    if not positive or not negative:
        return "empty_question"
    problem = question_problem(positive, lang) or question_problem(negative, lang)
    return problem or ("same_question" if positive.casefold() == negative.casefold() else None)


def triplet_rows(
    jobs: Sequence[TripletJob],
    positives: Sequence[Completion],
    negatives: Sequence[Completion],
    *,
    structured: bool,
    run_id: str,
    now: dt.datetime,
) -> list[TripletRow]:
    """One row per job, kept or with its drop_reason, so every dropped pair is counted. A
    truncated or unparsed question becomes ""; a question with a quality problem keeps its text."""
    rows = []
    for job, pos, neg in zip(jobs, positives, negatives, strict=True):
        language = prompt_language(job.chunk["language"])
        qs = [None if c.truncated else parse_question(c, structured=structured) for c in (pos, neg)]
        positive, negative = (q or "" for q in qs)
        full = load_prompt(QUESTION_PROMPT, language)
        degraded = load_prompt(negative_prompt(job.degradation), language)
        rows.append(
            TripletRow(
                id=content_id("tq", job.chunk["id"], job.degradation, positive, negative),
                **inherited(job.chunk),
                context=job.chunk["text"],
                positive=positive,
                negative=negative,
                degradation=job.degradation,
                drop_reason=_drop_reason((pos, neg), qs, job.chunk["language"]),
                positive_lineage=Lineage.of(pos, job.positive_request, full, run_id, now),
                negative_lineage=Lineage.of(neg, job.negative_request, degraded, run_id, now),
            )
        )
    return rows


def usable_triplets(rows: Sequence[TripletRow]) -> list[Triplet]:
    """The scorer's training triplets: the rows kept (drop_reason None)."""
    keep = {"context", "positive", "negative", "degradation"}
    return [Triplet(**r.model_dump(include=keep)) for r in rows if r.drop_reason is None]
