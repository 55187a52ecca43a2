"""AugCon's answer demonstrations, chosen by self-check, pure.

The model answers each of the user's example questions from its context (no demonstrations),
then judges its own answer against the example's reference (constrained to yes / no); the
examples it got right, up to `keep` (AugCon: 3 of 10), become the answer prompt's few-shot
demonstrations. Every example keeps its decision and reason, so a user sees why one was left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from condor_dagster.core.drop_reasons import DropReason
from condor_dagster.core.language import prompt_language
from condor_dagster.core.llm import Completion, LLMRequest, SamplingParams
from condor_dagster.core.prompts import load_prompt
from condor_dagster.methods.augcon.examples import QAExample, format_examples

ANSWER_PROMPT = "augcon/answer"
SELF_CHECK_PROMPT = "augcon/self_check"
ANSWER_TEMPERATURE = 0.2  # the seed's temperature for answers and for judging them
DEMOS_KEPT = 3  # AugCon keeps up to 3 of its 10 examples

_NO_DEMOS = {
    "en": "(No examples are available: answer from the passage alone.)",
    "zh": "（暂无示例：请仅依据段落作答。）",
}


class Verdict(BaseModel):
    """The self-check's constrained output."""

    verdict: Literal["yes", "no"]


def format_demos(examples: Sequence[QAExample], *, language: str) -> str:
    """The demonstrations block of the answer prompt; a sentence saying there are none when
    `examples` is empty (a model that failed every self-check still gets a valid prompt)."""
    if not examples:
        return _NO_DEMOS[prompt_language(language)]
    return format_examples(examples, language=language, with_answers=True)


def answer_request(
    *,
    context: str,
    question: str,
    demos: Sequence[QAExample],
    language: str,
    sampling: SamplingParams,
) -> LLMRequest:
    """The grounded answer request for one question about `context`."""
    template = load_prompt(ANSWER_PROMPT, prompt_language(language))
    messages = template.render(
        demos=format_demos(demos, language=language), context=context, question=question
    )
    return LLMRequest(messages=messages, sampling=sampling)


def demo_answer_requests(
    examples: Sequence[QAExample], *, language: str, sampling: SamplingParams
) -> list[LLMRequest]:
    """The model's own answer to each example, asked as a real question is (no demos)."""
    return [
        answer_request(
            context=e.context, question=e.question, demos=[], language=language, sampling=sampling
        )
        for e in examples
    ]


def judge_requests(
    examples: Sequence[QAExample],
    answers: Sequence[Completion],
    *,
    language: str,
    sampling: SamplingParams,
) -> list[LLMRequest]:
    """One yes/no judgment per (example, the model's answer to it)."""
    template = load_prompt(SELF_CHECK_PROMPT, prompt_language(language))
    return [
        LLMRequest(
            messages=template.render(
                question=e.question, reference=e.answer, answer=a.text.strip()
            ),
            sampling=sampling,
            schema=Verdict,
        )
        for e, a in zip(examples, answers, strict=True)
    ]


def parse_verdict(completion: Completion) -> Literal["yes", "no"] | None:
    """The verdict, or None when the judgment did not parse (truncated, off-schema)."""
    return completion.parsed.verdict if isinstance(completion.parsed, Verdict) else None


@dataclass(frozen=True)
class DemoDecision:
    """What the self-check made of one example."""

    example: QAExample
    answer: str
    """The model's own answer to the example question."""
    verdict: Literal["yes", "no"] | None
    kept: bool
    reason: DropReason | None
    """truncated (the answer ran out of tokens), parse_failed (the verdict), failed_self_check
    (judged "no"), over_quota (passed, but `keep` demos were already chosen); None when kept."""


def select_demos(
    examples: Sequence[QAExample],
    answers: Sequence[Completion],
    verdicts: Sequence[Completion],
    *,
    keep: int = DEMOS_KEPT,
) -> list[DemoDecision]:
    """A decision per example, in order; the first `keep` that pass are the demonstrations."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    decisions, kept = [], 0
    for example, answer, judged in zip(examples, answers, verdicts, strict=True):
        verdict = parse_verdict(judged)
        reason: DropReason | None
        if answer.truncated:
            reason = "truncated"
        elif verdict is None:
            reason = "parse_failed"
        elif verdict == "no":
            reason = "failed_self_check"
        elif kept >= keep:
            reason = "over_quota"
        else:
            reason = None
            kept += 1
        decisions.append(
            DemoDecision(example, answer.text.strip(), verdict, reason is None, reason)
        )
    return decisions
