"""The Context-Split-Tree's stop rules for one node, pure: given a node's context and what the
model wrote for it (a question and two parts), whether the node keeps its question and whether
its parts become child contexts, with the reason recursion stops there.

Rules (AugCon): a context of at most `min_context_chars` is not split further; a question
shorter than `min_question_chars` ends the branch; a part not shorter than its parent ends it
(the split made no progress); a part whose ROUGE-L precision against the parent is below
`min_support` is not in the parent (the paper's hallucination check), so the split is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from condor_dagster.methods.augcon.rouge import rouge_l

StopReason = Literal[
    "split",  # not a stop: both parts became children
    "short_context",
    "short_question",
    "part_not_shorter",
    "unsupported_split",
    "parse_failed",
    "max_depth",
]


class SplitRules(BaseModel):
    """Where recursion stops."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_context_chars: int = Field(default=20, ge=1)
    """A context of at most this many characters is a leaf (AugCon: 20)."""
    min_question_chars: int = Field(default=5, ge=1)
    """A question shorter than this ends the branch (AugCon: 5)."""
    min_support: float = Field(default=0.7, gt=0.0, le=1.0)
    """ROUGE-L precision each part needs against its parent (the paper: 0.7)."""
    max_depth: int = Field(default=8, ge=0)
    """A bound on depth, so a model that keeps splitting cannot recurse without end."""


@dataclass(frozen=True)
class SplitOutcome:
    """What happens at one node."""

    stop_reason: StopReason
    children: tuple[str, ...]
    """The parts that become child contexts (empty unless stop_reason is "split")."""
    support: tuple[float, ...]
    """ROUGE-L precision of each part against the parent (empty when not checked)."""


def split_outcome(
    context: str, question: str, parts: tuple[str, str], *, depth: int, rules: SplitRules
) -> SplitOutcome:
    """The outcome of a node whose model output parsed into `question` and `parts`."""
    if len(question.strip()) < rules.min_question_chars:
        return SplitOutcome("short_question", (), ())
    if any(len(part.strip()) >= len(context.strip()) for part in parts):
        return SplitOutcome("part_not_shorter", (), ())
    support = tuple(round(rouge_l(part, context).precision, 4) for part in parts)
    if min(support) < rules.min_support:
        return SplitOutcome("unsupported_split", (), support)
    if depth + 1 > rules.max_depth:
        return SplitOutcome("max_depth", (), support)
    return SplitOutcome("split", tuple(part.strip() for part in parts), support)


def is_leaf_context(context: str, rules: SplitRules) -> bool:
    """A context too short to ask about and split (no request is sent for it)."""
    return len(context.strip()) <= rules.min_context_chars


_MARKED = re.compile(
    r"(?:question|问题)\s*[:：]\s*(?P<q>.+?)\s*(?:part|部分)\s*1\s*[:：]\s*(?P<a>.+?)\s*"
    r"(?:part|部分)\s*2\s*[:：]\s*(?P<b>.+)",
    re.IGNORECASE | re.DOTALL,
)


def parse_marked_up(text: str) -> tuple[str, tuple[str, str]] | None:
    """The marked-up fallback form ("Question: ... Part 1: ... Part 2: ...", or 问题/部分 in
    Chinese) as (question, parts); None when the text does not have that form."""
    match = _MARKED.search(text)
    if match is None:
        return None
    return match["q"].strip(), (match["a"].strip(), match["b"].strip())
