"""AugCon's own row types: the origin struct every AugCon row carries, root chunks, the
Context-Split-Tree's nodes, the structured output of the split prompt and the filtered
questions (the answers are the shared answer stage's rows)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from condor_dagster.core.rows import DropReason, Lineage, SampleRow

METHOD = "augcon"


class AugconOrigin(BaseModel):
    """Where an AugCon sample comes from: a context of the tree grown from one chunk of one
    corpus document."""

    document_id: str
    """The corpus/documents row (`d-...`)."""
    source: str
    """The document's source path inside the corpus."""
    chunk_id: str
    """The root chunk (`ck-...`)."""
    node_path: str
    """The node's place in its tree: "" for the root, then "1"/"2" per level ("1.2" is the
    root's first part's second part)."""
    depth: int
    """0 for the root chunk."""
    tree_pass: int
    """Which tree over the chunk (0 first; more only while the chunk is short of its quota)."""
    context: str
    """The text the question was asked about."""


class ChunkRow(SampleRow):
    """augcon/chunks: one root context; parent_id is the document."""

    origin: AugconOrigin  # type: ignore[assignment]
    position: int
    """Index of the chunk inside its document."""
    text: str
    """The chunk (at most max_chunk_chars characters)."""
    chars: int
    quota: int
    """Questions the chunk should yield (one per chars_per_question characters)."""
    target: int
    """Questions generated for it up front (quota and the surplus)."""


class SplitOutput(BaseModel):
    """LLM output for one tree node: a question the context answers and the context split
    into two self-contained parts."""

    # Bounded lengths keep guided decoding from running to max_tokens inside one string.
    question: str = Field(max_length=300)
    part_1: str = Field(max_length=2000)
    part_2: str = Field(max_length=2000)


class TreeNodeRow(SampleRow):
    """augcon/context_tree: one node of a Context-Split-Tree; parent_id is the parent node
    (the chunk for a root). Its question is usable when drop_reason is None."""

    origin: AugconOrigin  # type: ignore[assignment]
    sample_index: int
    """The tree pass (seeds the request, so pass k differs from pass k+1)."""
    text: str
    """The question; "" when none was written or parsed."""
    stop_reason: str
    """Why recursion stopped here (split_rules.StopReason; "split" when both parts became
    children)."""
    part_1: str | None
    part_2: str | None
    support: list[float]
    """ROUGE-L precision of each part against this node's context (empty when not checked)."""
    drop_reason: DropReason | None
    """None for a usable question; short_context (no request: the context is a leaf),
    parse_failed, truncated, short_question or a question-quality reason otherwise."""
    error: str | None
    raw_text: str | None
    """The raw completion, kept only when it could not be parsed."""
    lineage: Lineage | None
    """None for leaf contexts (no request was sent)."""


class FilteredQuestionRow(SampleRow):
    """augcon/filtered_questions: one usable tree question with its scorer score and the
    ROUGE-L filter's decision; id and parent_id are the tree node's (a pass-through, as
    dedup is)."""

    origin: AugconOrigin  # type: ignore[assignment]
    text: str
    score: float
    """The query scorer's score of (context, question)."""
    rank: int
    """Rank of the score inside its root chunk (0 best)."""
    drop_reason: DropReason | None
    """rouge_duplicate or over_quota; None when kept."""
    collided_with: str | None
    """The kept question's id a rouge_duplicate repeats."""
    rouge_l: float | None
    """ROUGE-L F-measure against that question."""
    lineage: Lineage


class AnswerDemoRow(BaseModel):
    """augcon/answer_demos: one QA example, the model's own answer to it and the self-check's
    verdict; the kept rows are the grounded answers' demonstrations in their language."""

    id: str
    language: str
    """The prompt language ("en" or "zh") the example serves."""
    position: int
    """The example's place in its file."""
    context: str
    question: str
    reference: str
    """The example's reference answer (what a kept demo shows)."""
    answer: str
    """The model's answer, judged against the reference."""
    verdict: str | None
    """yes / no; None when the judgment did not parse."""
    kept: bool
    drop_reason: DropReason | None
    """truncated, parse_failed, failed_self_check or over_quota; None when kept."""
    answer_lineage: Lineage
    judge_lineage: Lineage
