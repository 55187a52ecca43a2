"""One drop-reason vocabulary for every stage of every method: why a row is not (or no longer)
a training candidate. Rows keep their reason; assets count them in `dropped_by_reason`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal, get_args

# The quality gates' findings (core/quality.py): also drop reasons where a row is dropped.
QualityProblem = Literal[
    "echoes_instructions",
    "repeats_ancestor",
    "not_a_question",
    "unfilled_placeholder",
    "degenerate_repetition",
    "meta_commentary",
    "refusal",
]
QUALITY_PROBLEMS: tuple[str, ...] = get_args(QualityProblem)

DropReason = Literal[
    # generation
    "parse_failed",
    "truncated",
    "rejected",
    "empty_question",
    "empty_answer",
    # quality gates
    QualityProblem,
    # dedup (core/dedup.py) and the cross-partition pass of sft_dataset
    "empty_text",
    "exact_duplicate",
    "near_duplicate",
    "cross_partition_duplicate",
    # corpus documents (methods/corpus): a record without usable text
    "malformed_document",
    "undecodable_text",
    # AugCon: a leaf context (no request sent), a tree node without a usable question, a
    # triplet whose two questions are the same, the ROUGE-L filter and the quota, the answer
    # demos' self-check
    "short_context",
    "short_question",
    "same_question",
    "rouge_duplicate",
    "over_quota",
    "failed_self_check",
]
DROP_REASONS: tuple[str, ...] = get_args(DropReason)


def check_drop_reason(reason: str | None) -> DropReason | None:
    """`reason` if it is in the vocabulary (or None); ValueError otherwise (a code bug)."""
    if reason is not None and reason not in DROP_REASONS:
        raise ValueError(f"drop reason {reason!r} is not in the vocabulary {DROP_REASONS}")
    return reason  # type: ignore[return-value]


def drop_metadata(reasons: Iterable[str | None]) -> dict[str, Any]:
    """`kept` and `dropped_by_reason` for an asset's metadata, from each row's drop_reason."""
    counts = Counter(check_drop_reason(r) or "kept" for r in reasons)
    kept = counts.pop("kept", 0)
    return {"kept": kept, "dropped_by_reason": dict(sorted(counts.items()))}
