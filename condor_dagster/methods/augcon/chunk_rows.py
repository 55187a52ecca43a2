"""augcon/chunks, pure part: the root contexts of a shard's usable documents, each with its
quota (one question per `chars_per_question` characters) and generation target (quota plus
the surplus generated up front)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from condor_dagster.core.rows import content_id
from condor_dagster.methods.augcon.chunking import ChunkSettings, chunk_document
from condor_dagster.methods.augcon.query_filter import generation_target, quota
from condor_dagster.methods.augcon.records import METHOD, AugconOrigin, ChunkRow


class QuotaSettings(BaseModel):
    """How many questions a chunk should yield."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chars_per_question: int = Field(default=35, ge=1)
    """One question per this many characters of root chunk (AugCon: 35)."""
    surplus: float = Field(default=0.15, ge=0.0, le=10.0)
    """Share generated beyond the quota up front, for the filter to drop (AugCon: 0.15)."""


def chunk_rows(
    documents: Iterable[Mapping[str, Any]], *, chunking: ChunkSettings, quotas: QuotaSettings
) -> list[ChunkRow]:
    """The chunks of every usable document (corpus/documents rows), in document order."""
    rows = []
    for document in documents:
        if document["drop_reason"] is not None:
            continue
        for position, text in enumerate(chunk_document(document["text"], chunking)):
            chunk_id = content_id("ck", document["id"], position, text)
            chunk_quota = quota(len(text), chars_per_question=quotas.chars_per_question)
            origin = AugconOrigin(
                document_id=document["id"],
                source=document["source"],
                chunk_id=chunk_id,
                node_path="",
                depth=0,
                tree_pass=0,
                context=text,
            )
            rows.append(
                ChunkRow(
                    id=chunk_id,
                    parent_id=document["id"],
                    method=METHOD,
                    partition_key=document["shard"],
                    language=document["language"],
                    origin=origin,
                    position=position,
                    text=text,
                    chars=len(text),
                    quota=chunk_quota,
                    target=generation_target(chunk_quota, surplus=quotas.surplus),
                )
            )
    return rows
