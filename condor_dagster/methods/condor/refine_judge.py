"""Refine vs Void, measured (pure part): the same model judges each draft against its refined
answer, pairwise, in both orders.

Condor's central claim is that Self-Reflection Refinement makes better answers than the drafts
(Condor Void). Here every rewritten row gets two judge calls, A=draft/B=refined and
A=refined/B=draft: an LLM judge prefers one position more often than chance, and only the two
orders together cancel that. Each verdict is mapped back to draft/refined/tie, and the pair
gets one outcome of `Outcome`. The win rate is refined wins over judged pairs, with ties and
disagreements (the two orders contradict) counted apart rather than folded in.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from condor_dagster.core.language import prompt_language
from condor_dagster.core.llm import Completion, GenerateFn, LLMRequest, SamplingParams
from condor_dagster.core.prompts import load_prompt
from condor_dagster.core.rows import Lineage, SampleRow, content_id, inherited
from condor_dagster.methods.condor.records import CondorOrigin

PROMPT_NAME = "condor/judge"
ID_PREFIX = "j"  # r-, a-, q- belong to refined answers, drafts and questions

Verdict = Literal["A", "B", "tie"]
Winner = Literal["draft", "refined", "tie"]
Order = Literal["draft_first", "refined_first"]
ORDERS: tuple[Order, ...] = ("draft_first", "refined_first")

# Every row has exactly one outcome:
# - refined_wins / draft_wins: that answer won both orders, or won one and tied the other
# - tie: both orders said tie
# - disagree: the two orders named different winners (position bias, or a coin-flip judge)
# - not_rewritten: refinement rewrote nothing (answer == draft), nothing to judge, no request
# - judge_failed: a judge completion could not be parsed (the error is kept)
# - disabled: the stage ran with enabled=false, no request
Outcome = Literal[
    "refined_wins", "draft_wins", "tie", "disagree", "not_rewritten", "judge_failed", "disabled"
]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
# Outcomes of pairs the judge actually decided: the denominator of the win rate.
JUDGED: frozenset[str] = frozenset({"refined_wins", "draft_wins", "tie", "disagree"})


class JudgeVerdict(BaseModel):
    """LLM output of one judge request (structured output)."""

    # The verdict comes first so a small completion budget spends itself on the decision; the
    # bounded reason keeps guided decoding from running on to max_tokens.
    verdict: Verdict
    reason: str = Field(max_length=160)


class JudgeCall(BaseModel):
    """One judge request of a pair, in one order."""

    order: Order
    """draft_first: A is the draft; refined_first: A is the refined answer."""
    verdict: Verdict | None
    """What the judge said (A, B, tie); None when the completion could not be parsed."""
    winner: Winner | None
    """The verdict mapped back to the answers: draft, refined or tie."""
    reason: str | None
    error: str | None
    """Why the completion could not be used (invalid JSON, schema mismatch, truncated)."""
    raw_text: str | None
    """The completion, kept only when it could not be parsed."""
    lineage: Lineage


class RefineQualityRow(SampleRow):
    """refine_quality: one judged (or skipped) draft/refined pair; parent_id is the refined
    answer's id."""

    origin: CondorOrigin  # type: ignore[assignment]
    draft_id: str
    """The draft answer (the refined answer's parent)."""
    question_id: str
    outcome: Outcome
    """The pair's combined outcome (see core.refine_quality.Outcome)."""
    error: str | None
    """For judge_failed: which order failed and why."""
    draft_first: JudgeCall | None
    """The call with A = draft, B = refined; None when not judged."""
    refined_first: JudgeCall | None
    """The call with A = refined, B = draft; None when not judged."""


@dataclass(frozen=True)
class PairToJudge:
    """A refined answer (its row, with the draft it refined), as the judge needs it."""

    row: Mapping[str, Any]
    """The refined_answers row (id, parent_id = draft id, question_id, question,
    draft_answer, answer and the contract fields)."""
    rewritten: bool
    """Some round produced an answer that differs from the draft."""

    @property
    def refined_id(self) -> str:
        return str(self.row["id"])

    @property
    def draft_id(self) -> str:
        return str(self.row["parent_id"])

    @property
    def question(self) -> str:
        return str(self.row["question"])

    @property
    def draft_answer(self) -> str:
        return str(self.row["draft_answer"])

    @property
    def refined_answer(self) -> str:
        return str(self.row["answer"])

    @property
    def prompt_language(self) -> str:
        return prompt_language(self.row["language"])


def pair_from_refined_row(row: Mapping[str, Any]) -> PairToJudge:
    """A refined_answers row (as a dict) as a pair. It counts as rewritten only when a round
    produced an answer and the final answer differs from the draft: judging two identical texts
    would spend two calls to learn "tie"."""
    rewritten = any(r.get("answer") is not None for r in row["rounds"] or [])
    return PairToJudge(row=row, rewritten=rewritten and row["answer"] != row["draft_answer"])


def judge_request(pair: PairToJudge, order: Order, sampling: SamplingParams) -> LLMRequest:
    """The judge request for one order: draft_first puts the draft in position A."""
    prompt = load_prompt(PROMPT_NAME, pair.prompt_language)
    first, second = (
        (pair.draft_answer, pair.refined_answer)
        if order == "draft_first"
        else (pair.refined_answer, pair.draft_answer)
    )
    messages = prompt.render(question=pair.question, answer_a=first, answer_b=second)
    return LLMRequest(messages=messages, sampling=sampling, schema=JudgeVerdict)


def winner_of(verdict: Verdict, order: Order) -> Winner:
    """Map a positional verdict back to the answer it names."""
    if verdict == "tie":
        return "tie"
    in_a: Winner = "draft" if order == "draft_first" else "refined"
    in_b: Winner = "refined" if order == "draft_first" else "draft"
    return in_a if verdict == "A" else in_b


def combine(first: Winner, second: Winner) -> Outcome:
    """The pair's outcome from the two orders' winners (order of the arguments is irrelevant):
    a winner of one order that the other calls a tie still wins; opposite winners disagree."""
    named = {first, second} - {"tie"}
    if not named:
        return "tie"
    if len(named) == 2:
        return "disagree"
    return "refined_wins" if named == {"refined"} else "draft_wins"


def judge_call(
    order: Order,
    completion: Completion,
    request: LLMRequest,
    *,
    language: str,
    run_id: str,
    now: dt.datetime,
) -> JudgeCall:
    """One parsed (or failed) judge completion, with its lineage (`language`: the prompt's)."""
    prompt = load_prompt(PROMPT_NAME, language)
    lineage = Lineage.of(completion, request, prompt, run_id, now)
    parsed = completion.parsed if isinstance(completion.parsed, JudgeVerdict) else None
    if parsed is None:
        error = completion.parse_error or "no verdict in the completion"
        return JudgeCall(
            order=order,
            verdict=None,
            winner=None,
            reason=None,
            error=error,
            raw_text=completion.text,
            lineage=lineage,
        )
    return JudgeCall(
        order=order,
        verdict=parsed.verdict,
        winner=winner_of(parsed.verdict, order),
        reason=parsed.reason,
        error=None,
        raw_text=None,
        lineage=lineage,
    )


def quality_row(
    pair: PairToJudge,
    *,
    outcome: Outcome | None = None,
    calls: Mapping[Order, JudgeCall] | None = None,
) -> RefineQualityRow:
    """The row of a pair: either with both judge calls (the outcome follows from them) or, for
    pairs never judged, with the given outcome (not_rewritten, disabled)."""
    if calls is None:
        if outcome not in ("not_rewritten", "disabled"):
            raise ValueError(
                f"a pair without judge calls is not_rewritten or disabled, not {outcome}"
            )
        decided: Outcome = outcome
        error = None
    else:
        if outcome is not None:
            raise ValueError("pass either the judge calls or the outcome, not both")
        failed = [f"{o}: {calls[o].error}" for o in ORDERS if calls[o].winner is None]
        error = "; ".join(failed) or None
        if failed:
            decided = "judge_failed"
        else:
            first, second = (calls[o].winner for o in ORDERS)
            assert first is not None and second is not None  # checked by `failed`
            decided = combine(first, second)
    verdicts = [(o, calls[o].verdict, calls[o].reason) for o in ORDERS] if calls else []
    return RefineQualityRow(
        id=content_id(ID_PREFIX, pair.refined_id, decided, verdicts),
        **inherited(pair.row),
        draft_id=pair.draft_id,
        question_id=pair.row["question_id"],
        outcome=decided,
        error=error,
        draft_first=calls["draft_first"] if calls else None,
        refined_first=calls["refined_first"] if calls else None,
    )


def judge_pairs(
    pairs: Sequence[PairToJudge],
    generate: GenerateFn,
    *,
    sampling: SamplingParams,
    enabled: bool,
    run_id: str,
    now: dt.datetime,
) -> list[RefineQualityRow]:
    """One row per pair, in input order. Every judge request of the batch (two per rewritten
    pair) goes to the engine in one call; unrewritten pairs and a disabled stage send none."""
    if not enabled:
        return [quality_row(p, outcome="disabled") for p in pairs]
    todo = [p for p in pairs if p.rewritten]
    requests = [judge_request(p, o, sampling) for p in todo for o in ORDERS]
    completions = list(generate(requests)) if requests else []
    if len(completions) != len(requests):
        raise ValueError(f"expected {len(requests)} judge completions, got {len(completions)}")
    judged: dict[str, RefineQualityRow] = {}
    for i, pair in enumerate(todo):
        calls = {
            order: judge_call(
                order,
                completions[2 * i + k],
                requests[2 * i + k],
                language=pair.prompt_language,
                run_id=run_id,
                now=now,
            )
            for k, order in enumerate(ORDERS)
        }
        judged[pair.refined_id] = quality_row(pair, calls=calls)
    return [
        judged[p.refined_id] if p.rewritten else quality_row(p, outcome="not_rewritten")
        for p in pairs
    ]


# ---- summary ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class WinRate:
    """Counts of one group of pairs (all, one task, one difficulty)."""

    refined_wins: int = 0
    draft_wins: int = 0
    ties: int = 0
    disagreements: int = 0

    @property
    def judged(self) -> int:
        return self.refined_wins + self.draft_wins + self.ties + self.disagreements

    @property
    def win_rate(self) -> float | None:
        """Refined wins / judged pairs; None when nothing was judged (not 0: unmeasured)."""
        return round(self.refined_wins / self.judged, 4) if self.judged else None

    @property
    def draft_win_rate(self) -> float | None:
        return round(self.draft_wins / self.judged, 4) if self.judged else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "judged": self.judged,
            "refined_wins": self.refined_wins,
            "draft_wins": self.draft_wins,
            "ties": self.ties,
            "disagreements": self.disagreements,
            "win_rate": self.win_rate,
            "draft_win_rate": self.draft_win_rate,
        }


_FIELD_OF = {
    "refined_wins": "refined_wins",
    "draft_wins": "draft_wins",
    "tie": "ties",
    "disagree": "disagreements",
}


@dataclass
class _Tally:
    counts: Counter[str] = field(default_factory=Counter)

    def frozen(self) -> WinRate:
        return WinRate(**{name: self.counts[o] for o, name in _FIELD_OF.items()})


@dataclass(frozen=True)
class QualitySummary:
    """Win rates overall, per task and per difficulty, plus every outcome's count."""

    overall: WinRate
    by_task: dict[str, WinRate]
    by_difficulty: dict[str, WinRate]
    outcomes: dict[str, int]
    """Every outcome of the vocabulary, zeros included, in vocabulary order."""

    def as_metadata(self) -> dict[str, Any]:
        return {
            **self.overall.as_dict(),
            "not_rewritten": self.outcomes["not_rewritten"],
            "judge_failed": self.outcomes["judge_failed"],
            "outcomes": dict(self.outcomes),
            "by_task": {k: v.as_dict() for k, v in self.by_task.items()},
            "by_difficulty": {k: v.as_dict() for k, v in self.by_difficulty.items()},
        }


def summarize(items: Iterable[tuple[str, str, str]]) -> QualitySummary:
    """Summary of (task, difficulty, outcome) triples. Groups appear in the order first seen
    after sorting, so equal inputs give equal summaries."""
    overall = _Tally()
    tasks: dict[str, _Tally] = {}
    levels: dict[str, _Tally] = {}
    outcomes: Counter[str] = Counter()
    for task, difficulty, outcome in items:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown refine_quality outcome {outcome!r}; one of {OUTCOMES}")
        outcomes[outcome] += 1
        if outcome not in JUDGED:
            continue
        for tally in (
            overall,
            tasks.setdefault(task, _Tally()),
            levels.setdefault(difficulty, _Tally()),
        ):
            tally.counts[outcome] += 1
    return QualitySummary(
        overall=overall.frozen(),
        by_task={k: tasks[k].frozen() for k in sorted(tasks)},
        by_difficulty={k: levels[k].frozen() for k in _difficulty_order(levels)},
        outcomes={o: outcomes[o] for o in OUTCOMES},
    )


def _difficulty_order(levels: Iterable[str]) -> list[str]:
    rank = {"easy": 0, "medium": 1, "hard": 2}
    return sorted(levels, key=lambda d: (rank.get(d, len(rank)), d))


def first_position_share(rows: Iterable[RefineQualityRow]) -> float | None:
    """Of the decisive single verdicts (A or B), the share that named position A: about 0.5
    for a judge without position bias, whatever the answers' quality (each pair is asked in
    both orders)."""
    verdicts = [
        call.verdict
        for row in rows
        for call in (row.draft_first, row.refined_first)
        if call is not None and call.verdict in ("A", "B")
    ]
    return round(verdicts.count("A") / len(verdicts), 4) if verdicts else None


# ---- dataset card ----------------------------------------------------------------------------
JUDGE_CAVEAT = (
    "The judge is the generating model itself. With a 135M judge (SmolLM2-135M, or the "
    "random-weight tiny model) this number is noise; with a 7B+ judge it is the figure to read."
)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(title: str, groups: Mapping[str, WinRate]) -> list[str]:
    lines = [
        f"| {title} | judged | refined wins | draft wins | ties | disagree | win rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, g in groups.items():
        lines.append(
            f"| {name} | {g.judged} | {g.refined_wins} | {g.draft_wins} | {g.ties} "
            f"| {g.disagreements} | {_rate(g.win_rate)} |"
        )
    return [*lines, ""]


def quality_card_lines(
    summary: QualitySummary | None, *, judge_models: Sequence[str], stale: int = 0
) -> list[str]:
    """The card's "Refine vs Void" section. `summary` None: refine_quality has no materialized
    partition, so the claim is not measured (said so, never shown as 0%)."""
    lines = ["## Refine vs Void (pairwise judge)", ""]
    if summary is None:
        return [
            *lines,
            "Not measured: refine_quality has no materialized partitions. Materialize it for",
            "the tag partitions (condor_tags_job) to compare refined answers with their drafts.",
            "",
        ]
    o = summary.overall
    lines += [
        "The same model judged each refined answer against its draft twice, once with each in",
        "position A, since a judge's preference for a position cancels only across both",
        "orders. Win rate = refined wins / judged pairs; a side wins a pair when it wins both",
        "orders or wins one and ties the other; ties and disagreements (the orders name",
        "different winners) are counted apart.",
        "",
        f"**{JUDGE_CAVEAT}**",
        "",
        f"- judge model: {', '.join(judge_models) or '-'}",
        f"- refined-over-draft win rate: {_rate(o.win_rate)} "
        f"({o.refined_wins} of {o.judged} judged pairs; draft wins {o.draft_wins}, "
        f"ties {o.ties}, disagreements {o.disagreements})",
        f"- not judged: {summary.outcomes['not_rewritten']} not rewritten by refinement, "
        f"{summary.outcomes['judge_failed']} judge failed, {summary.outcomes['disabled']} "
        "judge disabled",
    ]
    if stale:
        lines.append(f"- {stale} judgments of refined answers no longer in the data were ignored")
    lines.append("")
    if not o.judged:
        return [*lines, "Win rate not measured: no pair was judged.", ""]
    return [
        *lines,
        *_table("", {"all": o}),
        *_table("task", summary.by_task),
        *_table("difficulty", summary.by_difficulty),
    ]
