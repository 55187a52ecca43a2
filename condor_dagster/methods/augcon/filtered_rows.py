"""augcon/filtered_questions' rows, pure: every usable tree question with its score, its rank in
its root chunk and the ROUGE-L filter's decision (query_filter.filter_queries per chunk)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from condor_dagster.core.rows import INHERITED
from condor_dagster.methods.augcon.query_filter import filter_queries
from condor_dagster.methods.augcon.records import FilteredQuestionRow

Node = Mapping[str, Any]  # an augcon/context_tree row as a dict


def usable_nodes(nodes: Sequence[Node]) -> list[Node]:
    """The tree nodes whose question goes on to the filter (no drop reason, some text)."""
    return [n for n in nodes if n["drop_reason"] is None and n["text"].strip()]


def filtered_question_rows(
    nodes: Sequence[Node],
    scores: Sequence[float],
    *,
    quotas: Mapping[str, int],
    threshold: float = 0.7,
) -> list[FilteredQuestionRow]:
    """One row per usable node (same order): its id and parent stay the node's, so the tree,
    dedup and trace all name a question by one id. `quotas`: chunk id -> quota."""
    if len(nodes) != len(scores):
        raise ValueError(f"{len(nodes)} questions but {len(scores)} scores")
    by_chunk: dict[str, list[int]] = defaultdict(list)
    for index, node in enumerate(nodes):
        by_chunk[node["origin"]["chunk_id"]].append(index)
    rows: dict[int, FilteredQuestionRow] = {}
    for chunk_id, members in by_chunk.items():
        if chunk_id not in quotas:
            raise ValueError(
                f"tree questions of chunk {chunk_id!r} but no such augcon/chunks row: "
                "rematerialize augcon/context_tree after augcon/chunks"
            )
        texts = [nodes[i]["text"] for i in members]
        values = [scores[i] for i in members]
        decisions = filter_queries(texts, values, chunk_quota=quotas[chunk_id], threshold=threshold)
        ranked = sorted(range(len(members)), key=lambda j: (-values[j], j))
        rank = {j: r for r, j in enumerate(ranked)}
        for j, (index, decision) in enumerate(zip(members, decisions, strict=True)):
            node = nodes[index]
            collided = (
                None if decision.collided_with is None else nodes[members[decision.collided_with]]
            )
            rows[index] = FilteredQuestionRow(
                id=node["id"],
                parent_id=node["parent_id"],
                **{name: node[name] for name in INHERITED},
                text=node["text"],
                score=float(values[j]),
                rank=rank[j],
                drop_reason=decision.drop_reason,
                collided_with=None if collided is None else collided["id"],
                rouge_l=decision.rouge_l,
                lineage=node["lineage"],
            )
    return [rows[i] for i in range(len(nodes))]
