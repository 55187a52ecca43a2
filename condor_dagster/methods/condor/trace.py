"""How `condor trace` walks Condor's rows: refined answers (r-) -> draft answers (a-) ->
questions (q-, with their dedup decision) -> the tag's path in the knowledge tree; refine
judgments (j-) point at their refined answer. Tag ids trace as a tree path alone."""

from __future__ import annotations

import polars as pl

from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN
from condor_dagster.core.trace import (
    Finder,
    TraceMethod,
    TraceStage,
    TreeStep,
    lineage_of,
    register,
)

METHOD = "condor"
TREE = (METHOD, "knowledge_tree")
_MAX_TREE_DEPTH = 64


def _key(name: str) -> tuple[str, ...]:
    return (METHOD, name)


STAGES = [
    TraceStage(
        method=METHOD,
        key=_key("refine_quality"),
        id_prefix="j",
        text_column="outcome",
        label="judgment",
        parent=_key("refined_answers"),
        details=("outcome", "error"),
    ),
    TraceStage(
        method=METHOD,
        key=_key("refined_answers"),
        id_prefix="r",
        text_column="answer",
        label="answer",
        parent=_key("draft_answers"),
        details=("truncated", "rounds_run", "stop_reason"),
    ),
    TraceStage(
        method=METHOD,
        key=_key("draft_answers"),
        id_prefix="a",
        text_column="answer",
        label="answer",
        parent=_key("raw_questions"),
        details=("question", "truncated", "drop_reason"),
    ),
    TraceStage(
        method=METHOD,
        key=_key("raw_questions"),
        id_prefix="q",
        text_column="text",
        label="question",
        parent=None,
        details=("sample_index", "drop_reason", "error", "raw_text"),
        dedup=_key("deduplicated_questions"),
    ),
]


def tree_chain(finder: Finder, node_id: str) -> list[TreeStep]:
    """Nodes from the root down to `node_id`; a missing link ends it with a warning."""
    if not finder.store.exists(list(TREE)):
        finder.warnings.append(
            f"{finder.where(TREE)} does not exist: the tag path comes from the rows"
        )
        return []
    chain: list[TreeStep] = []
    current: str | None = node_id
    while current is not None and len(chain) < _MAX_TREE_DEPTH:
        node = finder.unpartitioned_row(TREE, "node_id", current)
        if node is None:
            what = "tag" if not chain else f"parent of {chain[-1].node_id}"
            extra = ""
            if not chain and finder.store.exists([METHOD, "raw_questions"], current):
                extra = "; its raw_questions partition exists, so the tree was rebuilt without it"
            finder.warnings.append(
                f"{what} {current!r} is not in {finder.where(TREE)} "
                f"({_nodes(finder)} nodes; the tree was rebuilt without it?): the path stops "
                f"there{extra}"
            )
            break
        chain.append(
            TreeStep(
                node_id=node["node_id"],
                parent_id=node["parent_id"],
                level=node["level"],
                name=node["name"],
                language=node["language"],
                source=node["source"],
                is_leaf=node["is_leaf"],
                lineage=lineage_of(node.get("lineage")),
            )
        )
        current = node["parent_id"]
    chain.reverse()
    return chain


def _nodes(finder: Finder) -> int:
    return finder.store.scan(list(TREE)).select(pl.len()).collect().item()


register(
    TraceMethod(
        method=METHOD,
        origin_chain=tree_chain,
        origin_id=PARTITION_KEY_PATTERN,
        origin_label="tag",
        origin_stage="/".join(TREE),
        partition_is_origin=True,
    ),
    STAGES,
)
