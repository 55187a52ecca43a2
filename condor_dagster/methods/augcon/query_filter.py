"""AugCon's quota and query filter, pure.

Quota: one question per `chars_per_question` characters of the root chunk (AugCon: 35), and
`surplus` more generated up front (15%) so the filter has some to drop. Filter: per root chunk,
queries in score order; one whose ROUGE-L F-measure against a kept query exceeds the threshold
(0.7) is dropped as a duplicate of it; once the quota is kept, the rest are over quota.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from condor_dagster.core.drop_reasons import DropReason
from condor_dagster.methods.augcon.rouge import rouge_l


def quota(chunk_chars: int, *, chars_per_question: int = 35) -> int:
    """Questions a root chunk should yield: one per `chars_per_question` characters, at least 1."""
    if chars_per_question < 1:
        raise ValueError(f"chars_per_question must be >= 1, got {chars_per_question}")
    return max(1, chunk_chars // chars_per_question)


def generation_target(chunk_quota: int, *, surplus: float = 0.15) -> int:
    """Questions to generate for a chunk: its quota and `surplus` more (rounded up)."""
    if not 0.0 <= surplus <= 10.0:
        raise ValueError(f"surplus must be in [0, 10], got {surplus}")
    return math.ceil(round(chunk_quota * (1.0 + surplus), 9))


@dataclass(frozen=True)
class FilterDecision:
    """What the filter did with one query."""

    kept: bool
    drop_reason: DropReason | None
    """rouge_duplicate or over_quota."""
    collided_with: int | None
    """Index of the kept query it duplicates (rouge_duplicate)."""
    rouge_l: float | None
    """ROUGE-L F-measure against that query."""


def filter_queries(
    queries: Sequence[str],
    scores: Sequence[float],
    *,
    chunk_quota: int,
    threshold: float = 0.7,
    similarity: Callable[[str, str], float] = lambda a, b: rouge_l(a, b).fmeasure,
) -> list[FilterDecision]:
    """A decision for each query of one root chunk (same order as `queries`)."""
    if len(queries) != len(scores):
        raise ValueError(f"{len(queries)} queries but {len(scores)} scores")
    order = sorted(range(len(queries)), key=lambda i: (-scores[i], i))
    decisions: dict[int, FilterDecision] = {}
    kept: list[int] = []
    for index in order:
        if len(kept) >= chunk_quota:
            decisions[index] = FilterDecision(False, "over_quota", None, None)
            continue
        best, best_value = None, 0.0
        for other in kept:
            value = similarity(queries[index], queries[other])
            if value > best_value:
                best, best_value = other, value
        if best is not None and best_value > threshold:
            decisions[index] = FilterDecision(False, "rouge_duplicate", best, best_value)
        else:
            decisions[index] = FilterDecision(True, None, None, None)
            kept.append(index)
    return [decisions[i] for i in range(len(queries))]
