"""Condor's own row types: the tree node, the structured outputs of its prompts, its origin
struct and its question row (the shared stages' rows are in core/)."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, Field, StringConstraints

from condor_dagster.core.rows import DropReason, Lineage, SampleRow
from condor_dagster.methods.condor.taxonomy import TreeNode

METHOD = "condor"

TaskType = Literal[
    "role_playing",
    "daily_chat",
    "domain_knowledge_qa",
    "given_material_processing",
    "response_format_control",
    "view",
    "creation",
]
Difficulty = Literal["easy", "medium", "hard"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)
DIFFICULTIES: tuple[str, ...] = get_args(Difficulty)


# ---- structured outputs (JSON schema sent to the engine) -------------------------------------
class TagNames(BaseModel):
    """LLM output of one tree-expansion request."""

    # Bounded lengths keep guided decoding short: the grammar closes strings and lists early.
    names: list[Annotated[str, StringConstraints(max_length=80)]] = Field(
        min_length=1, max_length=12
    )


class QuestionTriple(BaseModel):
    """LLM output of one question request: three questions of rising difficulty."""

    easy: str = Field(max_length=2000)
    medium: str = Field(max_length=2000)
    hard: str = Field(max_length=2000)


# ---- stored rows -----------------------------------------------------------------------------
class KnowledgeTreeRow(TreeNode):
    """knowledge_tree: one node; LLM-made nodes carry the lineage of the call that named them."""

    lineage: Lineage | None = None
    """None for seed and custom nodes."""


class CondorOrigin(BaseModel):
    """Where a Condor sample comes from: its leaf tag (the partition key), task and difficulty."""

    tag_path: str
    """Names from root to leaf, joined by " > "."""
    task: str
    """One of the 7 Condor task types."""
    difficulty: str
    """easy, medium or hard."""


class QuestionRow(SampleRow):
    """raw_questions: one question (or one failed attempt at it, with a drop_reason); its
    parent is the tag node, its partition key the tag id."""

    origin: CondorOrigin  # type: ignore[assignment]
    sample_index: int
    """Which of the samples per (tag, task) this came from."""
    text: str
    """The question; empty when generation failed."""
    drop_reason: DropReason | None
    """None for usable questions; parse_failed, truncated, empty_question, not_a_question or
    degenerate_repetition otherwise."""
    error: str | None
    """Parser message for dropped rows."""
    raw_text: str | None
    """The raw completion, kept only when it could not be parsed."""
    lineage: Lineage
