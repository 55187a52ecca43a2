"""Self-Reflection Refinement (Condor Refine), pure part; a shared stage any method may run.

Each round, for every answer still being refined: the same model critiques it (strengths,
weaknesses, suggestions), then rewrites it from the question, its previous answer and the
critique presented as user feedback. All rows' requests of a round go to the engine together.

A small model's rewrite often talks about itself ("Sure! Here is the improved answer:"): a
recognised preamble is cut (and kept in the round), and a rewrite that is only such talk, a
refusal or degenerate repetition is refused, so the previous answer stands and the row's final
answer is never meta-text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from condor_dagster.core.language import PromptLanguage, prompt_language
from condor_dagster.core.llm import ChatMessage, GenerateFn, LLMRequest, SamplingParams
from condor_dagster.core.prompts import load_prompt
from condor_dagster.core.quality import (
    QualityProblem,
    answer_drop_reason,
    answer_problem,
    repetition_problem,
    strip_meta_preamble,
)
from condor_dagster.core.rows import (
    DropReason,
    Lineage,
    SampleRow,
    check_drop_reason,
    content_id,
    inherited,
)

CRITIQUE_PROMPT = "shared/critique"
REWRITE_PROMPT = "shared/refine"


class Critique(BaseModel):
    """LLM output of one critique request (Condor's three-part critique).

    Bounded like TagNames: guided decoding closes an item at 300 characters and a list at 5
    items, so a rambling model's critique still closes its JSON. With 1,000 x 10 SmolLM2's
    critiques ran past their token budget unclosed (10 of 12 in a demo run)."""

    strengths: list[Annotated[str, StringConstraints(max_length=300)]] = Field(max_length=5)
    weaknesses: list[Annotated[str, StringConstraints(max_length=300)]] = Field(max_length=5)
    suggestions: list[Annotated[str, StringConstraints(max_length=300)]] = Field(max_length=5)


class RefineRound(BaseModel):
    """One critique -> rewrite round of Self-Reflection Refinement."""

    round: int
    """1 for the first round."""
    strengths: list[str]
    weaknesses: list[str]
    suggestions: list[str]
    critique_error: str | None
    """Why the critique could not be used (then the round rewrites nothing)."""
    critique_lineage: Lineage
    answer: str | None
    """The rewritten answer; None when the round stopped after its critique."""
    answer_error: str | None = None
    """Why the rewrite was not used (rejected prompt, empty text, a quality problem); the
    previous answer stands."""
    truncated: bool
    """The rewrite hit max_tokens."""
    answer_lineage: Lineage | None
    stripped_preamble: str | None = None
    """Meta-commentary cut from the start of the rewrite ("Sure! Here is the improved
    answer:"); `answer` is what followed it. None when nothing was cut."""
    rewrite_problem: str | None = None
    """The quality gate that refused the rewrite (meta_commentary, refusal,
    degenerate_repetition); None when the rewrite was used or failed for another reason."""
    rejected_answer: str | None = None
    """The rewrite text a quality gate refused, kept for audit; `answer` is None then."""


class RefinedAnswerRow(SampleRow):
    """refined_answers: a draft after Self-Reflection Refinement; parent_id is the draft id."""

    question_id: str
    """The question the draft answered (its parent)."""
    question: str
    draft_answer: str
    answer: str
    """The final answer: the last rewrite, or the draft when no round rewrote it."""
    truncated: bool
    """The final answer hit max_tokens."""
    rounds: list[RefineRound]
    """Every round's critique and rewrite, in order."""
    rounds_run: int
    stop_reason: str
    """max_rounds, no_weaknesses (early stop), critique_failed or rewrite_failed (rejected,
    empty, or refused by a quality gate: see the round's rewrite_problem)."""
    drop_reason: DropReason | None
    """Why the final answer cannot be a sample (the draft's reason when no round rewrote it)."""


@dataclass(frozen=True)
class DraftToRefine:
    """One answer to refine: the answer row (id, question, answer, truncated and the contract
    fields) as the answer stage stored it."""

    row: Mapping[str, Any]

    @property
    def draft_id(self) -> str:
        return str(self.row["id"])

    @property
    def question(self) -> str:
        return str(self.row["question"])

    @property
    def draft_answer(self) -> str:
        return str(self.row["answer"])

    @property
    def language(self) -> str:
        return str(self.row["language"])


@dataclass
class _State:
    draft: DraftToRefine
    answer: str
    truncated: bool = False
    rounds: list[RefineRound] = field(default_factory=list)
    stop_reason: str | None = None

    @property
    def language(self) -> PromptLanguage:
        return prompt_language(self.draft.language)


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items) or "- (none)"


def critique_request(state: _State, sampling: SamplingParams) -> LLMRequest:
    prompt = load_prompt(CRITIQUE_PROMPT, state.language)
    messages = prompt.render(question=state.draft.question, answer=state.answer)
    return LLMRequest(messages=messages, sampling=sampling, schema=Critique)


def refine_request(state: _State, critique: Critique, sampling: SamplingParams) -> LLMRequest:
    """The conversation Condor describes: question, the model's own answer, then the critique
    as the user's feedback."""
    prompt = load_prompt(REWRITE_PROMPT, state.language)
    system, feedback = prompt.render(
        strengths=_bullets(critique.strengths),
        weaknesses=_bullets(critique.weaknesses),
        suggestions=_bullets(critique.suggestions),
    )
    messages = (
        system,
        ChatMessage(role="user", content=state.draft.question),
        ChatMessage(role="assistant", content=state.answer),
        feedback,
    )
    return LLMRequest(messages=messages, sampling=sampling)


def refine_answers(
    drafts: Sequence[DraftToRefine],
    generate: GenerateFn,
    *,
    rounds: int,
    stop_when_no_weaknesses: bool,
    critique_sampling: SamplingParams,
    answer_sampling: SamplingParams,
    id_prefix: str = "r",
    run_id: str,
    now: dt.datetime,
) -> list[RefinedAnswerRow]:
    """Run up to `rounds` critique -> rewrite rounds; one row per draft, in input order."""
    if rounds < 1:
        raise ValueError(f"refine rounds must be >= 1, got {rounds}")
    states = [_State(d, d.draft_answer, bool(d.row["truncated"])) for d in drafts]
    for number in range(1, rounds + 1):
        active = [s for s in states if s.stop_reason is None]
        if not active:
            break
        critique_requests = [critique_request(s, critique_sampling) for s in active]
        critiques = generate(critique_requests)
        to_rewrite: list[tuple[_State, Critique, Lineage]] = []
        for state, request, completion in zip(active, critique_requests, critiques, strict=True):
            prompt = load_prompt(CRITIQUE_PROMPT, state.language)
            lineage = Lineage.of(completion, request, prompt, run_id, now)
            critique = completion.parsed if isinstance(completion.parsed, Critique) else None
            # A small model's critique can be one item six times over ("福制", "福制", ...):
            # a rewrite from it would be noise, so it counts as a failed critique (kept).
            degenerate = critique is not None and repetition_problem(
                "\n".join([*critique.strengths, *critique.weaknesses, *critique.suggestions])
            )
            if critique is None:
                state.rounds.append(_round(number, None, completion.parse_error, lineage))
                state.stop_reason = "critique_failed"
            elif degenerate:
                error = f"{degenerate}: the critique repeats itself"
                state.rounds.append(_round(number, critique, error, lineage))
                state.stop_reason = "critique_failed"
            elif stop_when_no_weaknesses and not [w for w in critique.weaknesses if w.strip()]:
                state.rounds.append(_round(number, critique, None, lineage))
                state.stop_reason = "no_weaknesses"
            else:
                to_rewrite.append((state, critique, lineage))
        rewrite_requests = [refine_request(s, c, answer_sampling) for s, c, _ in to_rewrite]
        rewrites = generate(rewrite_requests) if rewrite_requests else []
        for (state, critique, c_lineage), request, completion in zip(
            to_rewrite, rewrite_requests, rewrites, strict=True
        ):
            prompt = load_prompt(REWRITE_PROMPT, state.language)
            a_lineage = Lineage.of(completion, request, prompt, run_id, now)
            if completion.parse_error or not completion.text.strip():
                # Rejected (prompt too long) or empty: the previous answer stands.
                error = completion.parse_error or "empty rewrite"
                state.rounds.append(
                    _round(number, critique, None, c_lineage, None, a_lineage, answer_error=error)
                )
                state.stop_reason = "rewrite_failed"
                continue
            answer, preamble, problem = rewrite_gate(completion.text, state.draft.language)
            if problem is not None:
                # Refused by a gate: the previous answer stands, the text is kept for audit.
                state.rounds.append(
                    _round(
                        number,
                        critique,
                        None,
                        c_lineage,
                        None,
                        a_lineage,
                        answer_error=f"{problem}: the rewrite was refused by a quality gate",
                        stripped_preamble=preamble,
                        rewrite_problem=problem,
                        rejected_answer=completion.text,
                    )
                )
                state.stop_reason = "rewrite_failed"
                continue
            state.answer = answer
            state.truncated = completion.truncated
            state.rounds.append(
                _round(
                    number,
                    critique,
                    None,
                    c_lineage,
                    answer,
                    a_lineage,
                    stripped_preamble=preamble,
                )
            )
    return [_row(s, id_prefix) for s in states]


def rewrite_gate(text: str, language: str) -> tuple[str, str | None, QualityProblem | None]:
    """(answer, stripped_preamble, problem) for a rewrite: a recognised meta preamble is cut
    (`quality.strip_meta_preamble`); then the answer must pass `quality.answer_problem`
    (refusal, degenerate repetition). `problem` None means the answer may replace the
    previous one."""
    answer, preamble, problem = strip_meta_preamble(text, language)
    return answer, preamble, problem or answer_problem(answer, language)


def _round(
    number: int,
    critique: Critique | None,
    error: str | None,
    critique_lineage: Lineage,
    answer: str | None = None,
    answer_lineage: Lineage | None = None,
    answer_error: str | None = None,
    *,
    stripped_preamble: str | None = None,
    rewrite_problem: str | None = None,
    rejected_answer: str | None = None,
) -> RefineRound:
    return RefineRound(
        round=number,
        strengths=critique.strengths if critique else [],
        weaknesses=critique.weaknesses if critique else [],
        suggestions=critique.suggestions if critique else [],
        critique_error=error,
        critique_lineage=critique_lineage,
        answer=answer,
        answer_error=answer_error,
        truncated=bool(answer_lineage and answer_lineage.finish_reason == "length"),
        answer_lineage=answer_lineage,
        stripped_preamble=stripped_preamble,
        rewrite_problem=rewrite_problem,
        rejected_answer=rejected_answer,
    )


def _row(state: _State, id_prefix: str) -> RefinedAnswerRow:
    d = state.draft
    return RefinedAnswerRow(
        id=content_id(id_prefix, d.draft_id, [r.answer for r in state.rounds], state.answer),
        **inherited(d.row),
        question_id=d.row["parent_id"],
        question=d.question,
        draft_answer=d.draft_answer,
        answer=state.answer,
        truncated=state.truncated,
        rounds=state.rounds,
        rounds_run=len(state.rounds),
        stop_reason=state.stop_reason or "max_rounds",
        drop_reason=_final_drop_reason(state),
    )


def _final_drop_reason(state: _State) -> DropReason | None:
    if not any(r.answer is not None for r in state.rounds):
        return check_drop_reason(state.draft.row.get("drop_reason"))
    return answer_drop_reason(state.answer, state.truncated, None, language=state.draft.language)
