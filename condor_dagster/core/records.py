"""Row types of every stage: one pydantic model each, which feeds the parser, the Parquet schema
and (for LLM outputs) the JSON schema sent to the engine.

Every generated row carries the lineage record of the architecture: its own content-addressed
`id`, the `parent_id` it was made from, its `tag_id`, and `Lineage` (prompt, model, engine,
sampling, seed, tokens, run, time).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from condor_dagster.core.llm import Completion, LLMRequest
from condor_dagster.core.prompts import PromptTemplate
from condor_dagster.core.taxonomy import TreeNode

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


def content_id(prefix: str, *parts: object) -> str:
    """Content-addressed row id: equal inputs give equal ids in any run or process."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)
    return f"{prefix}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


class Lineage(BaseModel):
    """Where a generated row came from."""

    model_config = ConfigDict(frozen=True)

    prompt_name: str
    """Prompt template that built the request (e.g. "questions/en")."""
    prompt_sha: str
    """sha256 prefix of the template file."""
    model: str
    """Model id or path that generated the text."""
    engine: str
    """Engine name (vllm, vllm-server, scripted...)."""
    engine_version: str
    """Engine version."""
    sampling: str
    """Sampling params as JSON, seed excluded."""
    seed: int
    """Seed the request ran with."""
    finish_reason: str
    """stop, length, rejected..."""
    prompt_tokens: int
    """Prompt tokens of the request."""
    completion_tokens: int
    """Completion tokens generated."""
    cached: bool
    """Replayed from the response cache instead of generated in this run."""
    run_id: str
    """Dagster run that materialized the row."""
    created_at: dt.datetime
    """When the row was materialized (UTC)."""

    @classmethod
    def of(
        cls,
        completion: Completion,
        request: LLMRequest,
        prompt: PromptTemplate,
        run_id: str,
        now: dt.datetime,
    ) -> Lineage:
        return cls(
            prompt_name=prompt.key,
            prompt_sha=prompt.sha,
            model=completion.model,
            engine=completion.engine,
            engine_version=completion.engine_version,
            sampling=json.dumps(request.sampling.key_fields(), sort_keys=True),
            seed=completion.seed,
            finish_reason=completion.finish_reason,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            cached=completion.cached,
            run_id=run_id,
            created_at=now,
        )


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


class Critique(BaseModel):
    """LLM output of one critique request (Condor's three-part critique).

    Bounded like TagNames: guided decoding closes an item at 300 characters and a list at 5
    items, so a rambling model's critique still closes its JSON. With 1,000 x 10 SmolLM2's
    critiques ran past their token budget unclosed (10 of 12 in a demo run)."""

    strengths: list[Annotated[str, StringConstraints(max_length=300)]] = Field(max_length=5)
    weaknesses: list[Annotated[str, StringConstraints(max_length=300)]] = Field(max_length=5)
    suggestions: list[Annotated[str, StringConstraints(max_length=300)]] = Field(max_length=5)


# ---- stored rows -----------------------------------------------------------------------------
class KnowledgeTreeRow(TreeNode):
    """knowledge_tree: one node; LLM-made nodes carry the lineage of the call that named them."""

    lineage: Lineage | None = None
    """None for seed and custom nodes."""


class TaggedRow(BaseModel):
    """Fields every per-tag row starts with."""

    id: str
    """Content-addressed row id."""
    parent_id: str
    """The row this one was made from (for questions: the tag node)."""
    tag_id: str
    """Leaf tag id (the partition key)."""
    tag_path: str
    """Names from root to leaf, joined by " > "."""
    task: str
    """One of the 7 Condor task types."""
    difficulty: str
    """easy, medium or hard."""
    language: str
    """Language of the prompt and text."""


class QuestionRow(TaggedRow):
    """raw_questions: one question (or one failed attempt at it, with a drop_reason)."""

    sample_index: int
    """Which of the samples per (tag, task) this came from."""
    text: str
    """The question; empty when generation failed."""
    drop_reason: str | None
    """None for usable questions; parse_failed, truncated, empty_question, not_a_question or
    degenerate_repetition otherwise."""
    error: str | None
    """Parser message for dropped rows."""
    raw_text: str | None
    """The raw completion, kept only when it could not be parsed."""
    lineage: Lineage


class DedupQuestionRow(TaggedRow):
    """deduplicated_questions: every raw question (same id) with its dedup decision."""

    text: str
    kept: bool
    """True when the question goes on to the answer stage."""
    drop_reason: str | None
    """Carried from raw_questions, or exact_duplicate / near_duplicate / empty_text."""
    duplicate_of: str | None
    """Id of the question this one duplicates (kept, or itself a duplicate of a kept one)."""
    similarity: float | None
    """Cosine similarity to duplicate_of (1.0 for exact duplicates)."""
    embedding: list[float] | None
    """L2-normalised embedding, stored for the cross-tag pass (None when not embedded)."""
    embedding_model: str
    """Embedding model id."""


class DraftAnswerRow(TaggedRow):
    """draft_answers: one answer per kept question (Condor Void); parent_id is the question."""

    question: str
    answer: str
    truncated: bool
    """The answer hit max_tokens; flagged, filtered at export."""
    lineage: Lineage


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


class RefinedAnswerRow(TaggedRow):
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


def frames_by_tag(rows: Sequence[TaggedRow], keys: Sequence[str], model: type[TaggedRow]) -> Any:
    """{tag_id: DataFrame} for every key, in key order; a key without rows gets an empty frame
    with the full schema."""
    grouped: dict[str, list[TaggedRow]] = {k: [] for k in keys}
    for row in rows:
        grouped[row.tag_id].append(row)
    return {k: rows_to_frame(grouped[k], model) for k in keys}


# ---- Parquet schema from the models ------------------------------------------------------------
def _arrow_type(annotation: Any) -> tuple[Any, bool]:
    import pyarrow as pa

    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        inner, _ = _arrow_type(args[0])
        return inner, True
    if origin is Literal:
        return pa.string(), False
    if origin is list:
        inner, _ = _arrow_type(get_args(annotation)[0])
        return pa.list_(pa.float32() if inner == pa.float64() else inner), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(list(arrow_schema(annotation))), False
    mapping = {
        str: pa.string(),
        int: pa.int64(),
        float: pa.float64(),
        bool: pa.bool_(),
        dt.datetime: pa.timestamp("us", tz="UTC"),
    }
    if annotation in mapping:
        return mapping[annotation], False
    raise TypeError(f"no Parquet type for field annotation {annotation!r}")


def arrow_schema(model: type[BaseModel]) -> Any:
    """The pyarrow schema of a row model (nested models become structs)."""
    import pyarrow as pa

    hints = typing.get_type_hints(model)
    fields = []
    for name in model.model_fields:
        arrow_type, nullable = _arrow_type(hints[name])
        fields.append(pa.field(name, arrow_type, nullable=nullable))
    return pa.schema(fields)


def rows_to_frame(rows: Sequence[BaseModel], model: type[BaseModel]) -> Any:
    """A polars DataFrame with exactly the model's schema (also when `rows` is empty)."""
    import polars as pl
    import pyarrow as pa

    schema = arrow_schema(model)
    table = pa.Table.from_pylist([r.model_dump() for r in rows], schema=schema)
    return pl.from_arrow(table)
