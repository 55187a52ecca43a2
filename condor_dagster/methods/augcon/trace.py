"""How `condor trace` walks AugCon's rows: grounded answers (ca-) -> the tree question (cn-,
with its dedup decision) -> its ancestors in the Context-Split-Tree -> the root chunk (ck-) ->
the corpus document (d-)."""

from __future__ import annotations

from typing import Any

from condor_dagster.core.trace import (
    Finder,
    TraceMethod,
    TraceStage,
    TreeStep,
    lineage_of,
    register,
)

METHOD = "augcon"
TREE = (METHOD, "context_tree")
CHUNKS = (METHOD, "chunks")
DOCUMENTS = ("corpus", "documents")
_MAX_DEPTH = 64
_NAME_CHARS = 120


def _key(name: str) -> tuple[str, ...]:
    return (METHOD, name)


STAGES = [
    TraceStage(
        method=METHOD,
        key=_key("grounded_answers"),
        id_prefix="ca",
        text_column="answer",
        label="answer",
        parent=TREE,
        details=("question", "truncated", "drop_reason"),
    ),
    TraceStage(
        method=METHOD,
        key=TREE,
        id_prefix="cn",
        text_column="text",
        label="question",
        parent=None,
        details=("stop_reason", "drop_reason", "support"),
        dedup=_key("deduplicated_questions"),
    ),
]


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _NAME_CHARS else text[: _NAME_CHARS - 1] + "…"


def _found(finder: Finder, key: tuple[str, ...], row_id: str, what: str) -> dict[str, Any] | None:
    """The row, or None with a warning naming where it was looked for."""
    row = finder.row(key, row_id)
    if row is None:
        finder.warnings.append(f"{what} {row_id!r} is not in {finder.where(key)}")
    return row


def corpus_chain(finder: Finder, origin_id: str) -> list[TreeStep]:
    """From the document down to the question's parent: document, chunk, tree nodes."""
    chain: list[TreeStep] = []
    current: str | None = origin_id
    while current is not None and current.startswith("cn-") and len(chain) < _MAX_DEPTH:
        node = _found(finder, TREE, current, "tree node")
        if node is None:
            return list(reversed(chain))
        chain.append(
            TreeStep(
                node_id=node["id"],
                parent_id=node["parent_id"],
                level=2 + int(node["origin"]["depth"]),
                name=f"node {node['origin']['node_path'] or 'root'}: "
                + _short(node["origin"]["context"]),
                language=node["language"],
                source="llm",
                is_leaf=False,
                lineage=lineage_of(node.get("lineage")),
            )
        )
        current = node["parent_id"]
    if current is not None and current.startswith("ck-"):
        chunk = _found(finder, CHUNKS, current, "chunk")
        if chunk is None:
            return list(reversed(chain))
        chain.append(
            TreeStep(
                node_id=chunk["id"],
                parent_id=chunk["parent_id"],
                level=1,
                name=f"chunk {chunk['position']}: {_short(chunk['text'])}",
                language=chunk["language"],
                source="corpus",
                is_leaf=False,
                lineage=None,
            )
        )
        current = chunk["parent_id"]
    if current is not None:
        document = _found(finder, DOCUMENTS, current, "document")
        if document is None:
            return list(reversed(chain))
        chain.append(
            TreeStep(
                node_id=document["id"],
                parent_id=None,
                level=0,
                name=f"{document['source']}"
                + (f" ({document['title']})" if document.get("title") else ""),
                language=document["language"],
                source="corpus",
                is_leaf=False,
                lineage=None,
            )
        )
    return list(reversed(chain))


register(
    TraceMethod(
        method=METHOD,
        origin_chain=corpus_chain,
        origin_label="document",
        origin_stage="corpus/documents",
    ),
    STAGES,
)
