"""The row contract every sample-producing stage of every method shares.

A row carries its content-addressed `id`, the `parent_id` it was made from, the `method` and
`partition_key` it belongs to, its `language`, a `drop_reason` from one vocabulary (None while
the row is usable), the method's `origin` struct (Condor: tag path, task, difficulty; AugCon:
the context and its place in the tree; Kun: the source text), and, where an LLM wrote it,
`Lineage`. A derived row inherits method, partition, language and origin from its parent
through one function (`inherited`), never by copying fields by hand.

The pydantic model of each record type is the one source of its Parquet schema
(`arrow_schema`); `origin` is a struct whose type the method defines, so stages that only pass
it through take the type from their input frame (`origin_type`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from condor_dagster.core.drop_reasons import (
    DROP_REASONS,
    DropReason,
    check_drop_reason,
    drop_metadata,
)
from condor_dagster.core.llm import Completion, LLMRequest
from condor_dagster.core.prompts import PromptTemplate


def content_id(prefix: str, *parts: object) -> str:
    """Content-addressed row id: equal inputs give equal ids in any run or process."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)
    return f"{prefix}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


class Lineage(BaseModel):
    """Where a generated row came from."""

    model_config = ConfigDict(frozen=True)

    prompt_name: str
    """Prompt template that built the request (e.g. "condor/questions/en")."""
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


class SampleRow(BaseModel):
    """Fields every sample-producing stage's row starts with."""

    id: str
    """Content-addressed row id; its prefix names the method's stage (see core/trace.py)."""
    parent_id: str
    """The row this one was made from (for a method's first rows: its origin, e.g. the tag)."""
    method: str
    """condor, augcon, kun, ..."""
    partition_key: str
    """The partition the row belongs to (a tag id, a corpus shard)."""
    language: str
    """Language of the prompt and text."""
    origin: dict[str, Any]
    """Where the sample comes from, in the method's own terms (a struct in Parquet)."""


__all__ = [
    "DROP_REASONS",
    "DropReason",
    "Lineage",
    "SampleRow",
    "arrow_schema",
    "check_drop_reason",
    "content_id",
    "drop_metadata",
    "frames_by_partition",
    "inherited",
    "origin_type",
    "rows_to_frame",
]

INHERITED = ("method", "partition_key", "language", "origin")


def inherited(parent: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a derived row takes from its parent row: `parent_id` is the parent's id,
    method, partition, language and origin are the parent's. The one place they are copied."""
    return {"parent_id": parent["id"], **{name: parent[name] for name in INHERITED}}


def origin_type(frame: Any) -> Any:
    """The pyarrow struct type of a frame's `origin` column (what a pass-through stage writes)."""
    return frame.select("origin").to_arrow().schema.field("origin").type


def frames_by_partition(
    rows: Sequence[BaseModel],
    keys: Sequence[str],
    model: type[BaseModel],
    *,
    origin: Any = None,
) -> dict[str, Any]:
    """{partition_key: DataFrame} for every key, in key order; a key without rows gets an empty
    frame with the full schema. `origin`: the arrow type of the origin struct when the model
    leaves it open (dict)."""
    grouped: dict[str, list[BaseModel]] = {k: [] for k in keys}
    for row in rows:
        grouped[row.partition_key].append(row)  # type: ignore[attr-defined]
    return {k: rows_to_frame(grouped[k], model, origin=origin) for k in keys}


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


def arrow_schema(model: type[BaseModel], *, origin: Any = None) -> Any:
    """The pyarrow schema of a row model (nested models become structs). `origin`: the arrow
    type (or a pydantic model) of an `origin` field the model leaves open as a dict."""
    import pyarrow as pa

    hints = typing.get_type_hints(model)
    fields = []
    for name in model.model_fields:
        if name == "origin" and origin is not None:
            arrow_type = pa.struct(list(arrow_schema(origin))) if _is_model(origin) else origin
            fields.append(pa.field(name, arrow_type, nullable=False))
            continue
        arrow_type, nullable = _arrow_type(hints[name])
        fields.append(pa.field(name, arrow_type, nullable=nullable))
    return pa.schema(fields)


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def rows_to_frame(rows: Sequence[BaseModel], model: type[BaseModel], *, origin: Any = None) -> Any:
    """A polars DataFrame with exactly the model's schema (also when `rows` is empty)."""
    import polars as pl
    import pyarrow as pa

    schema = arrow_schema(model, origin=origin)
    table = pa.Table.from_pylist([r.model_dump() for r in rows], schema=schema)
    return pl.from_arrow(table)
