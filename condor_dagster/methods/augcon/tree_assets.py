"""augcon/chunks and augcon/context_tree: root contexts of each shard's documents, then the
Context-Split-Tree grown over every chunk of every shard in the run, one engine call a level."""

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.core.drop_reasons import drop_metadata
from condor_dagster.core.llm import Completion, GenerationStats, LLMRequest, SamplingParams
from condor_dagster.core.prompts import code_version, prompts_sha
from condor_dagster.core.rows import frames_by_partition
from condor_dagster.methods.augcon.chunk_rows import QuotaSettings, chunk_rows
from condor_dagster.methods.augcon.chunking import ChunkSettings
from condor_dagster.methods.augcon.context_tree import SPLIT_PROMPT, TreeSettings, grow_trees
from condor_dagster.methods.augcon.examples import QAExample, load_examples, shipped_examples_path
from condor_dagster.methods.augcon.partitions import key, shard_stage
from condor_dagster.methods.augcon.records import AugconOrigin, ChunkRow, TreeNodeRow
from condor_dagster.methods.augcon.split_rules import SplitRules
from condor_dagster.methods.corpus.partitions import key as corpus_key
from condor_dagster.stages.metadata import generation_metadata, partitioned_frame_metadata
from condor_dagster.stages.partitions import (
    GPU_POOL,
    inputs_by_partition,
    llm_for_role,
    output_for_partitions,
    run_started_at,
)


class ChunksConfig(dg.Config):
    """How documents become root contexts and how many questions each should yield."""

    min_paragraph_chars: int = Field(default=100, ge=0)
    """Paragraphs of at most this many characters are left out (AugCon: 100)."""
    max_chunk_chars: int = Field(default=500, ge=20)
    """A chunk holds at most this many characters (AugCon: 500)."""
    chars_per_question: int = Field(default=35, ge=1)
    """Quota: one question per this many characters of chunk (AugCon: 35)."""
    surplus: float = Field(default=0.15, ge=0.0, le=10.0)
    """Generated beyond the quota up front (AugCon: 15%)."""
    max_chunks_per_document: int | None = Field(default=None, ge=1)
    """Keep only a document's first chunks (None: all); for demos and trials."""


def _chunks_version() -> str:
    return code_version(["augcon-chunks-v1"], ChunksConfig().model_dump())


@shard_stage(
    "chunks",
    ins={"documents": corpus_key("documents")},
    kinds={"parquet"},
    code_version=_chunks_version(),
    checks=["not_empty"],
    description="Root contexts: paragraphs over 100 characters cut at sentence ends.",
)
def chunks(
    context: dg.AssetExecutionContext, config: ChunksConfig, documents: Any
) -> Iterator[dg.Output[Any] | dg.AssetCheckResult]:
    """One row per chunk with its quota and generation target; parent_id is the document."""
    docs = inputs_by_partition(context, documents)
    settings = ChunkSettings(
        min_paragraph_chars=config.min_paragraph_chars, max_chunk_chars=config.max_chunk_chars
    )
    quotas = QuotaSettings(chars_per_question=config.chars_per_question, surplus=config.surplus)
    rows = []
    for shard in context.partition_keys:
        shard_rows = chunk_rows(docs[shard].iter_rows(named=True), chunking=settings, quotas=quotas)
        if config.max_chunks_per_document is not None:
            shard_rows = [r for r in shard_rows if r.position < config.max_chunks_per_document]
        rows += shard_rows
    frames = frames_by_partition(rows, list(context.partition_keys), ChunkRow, origin=AugconOrigin)
    empty = [k for k, f in frames.items() if f.height == 0]
    yield dg.Output(
        output_for_partitions(context, frames),
        metadata={
            **partitioned_frame_metadata(frames, ["position", "chars", "quota", "text"]),
            "documents": sum(docs[k].filter(pl.col("drop_reason").is_null()).height for k in docs),
            "chunks": len(rows),
            "quota_total": sum(r.quota for r in rows),
            "target_total": sum(r.target for r in rows),
        },
    )
    yield dg.AssetCheckResult(
        check_name="not_empty", passed=not empty, metadata={"shards_without_chunks": empty}
    )


class ContextTreeConfig(dg.Config):
    """Context-Split-Tree settings."""

    temperature: float = Field(default=0.85, ge=0.0)
    """Sampling temperature of the split requests (AugCon: 0.85)."""
    max_tokens: int = Field(default=768, ge=32)
    """Completion budget of one node (a question and two parts, about the context's length)."""
    structured_output: bool = True
    """JSON schema output; False parses the "Question: / Part 1: / Part 2:" text form."""
    min_context_chars: int = Field(default=20, ge=1)
    """A context of at most this many characters is a leaf (AugCon: 20)."""
    min_question_chars: int = Field(default=5, ge=1)
    """A question shorter than this ends the branch (AugCon: 5)."""
    min_support: float = Field(default=0.7, gt=0.0, le=1.0)
    """ROUGE-L precision each part needs against its parent (the paper: 0.7)."""
    max_depth: int = Field(default=8, ge=0)
    """Depth bound of a tree."""
    max_passes: int = Field(default=3, ge=1, le=20)
    """Trees per chunk at most, while the chunk is short of its target."""
    examples_path: str | None = None
    """JSONL of {context, question, answer} few-shot examples for every language; None uses
    the project's (data/qa_examples.<en|zh>.jsonl)."""


def examples_by_language(path: str | None) -> dict[str, list[QAExample]]:
    """The few-shot examples per prompt language: the user's file for both, or the shipped."""
    if path is not None:
        mine = load_examples(path)
        return {"en": mine, "zh": mine}
    return {lang: load_examples(shipped_examples_path(lang)) for lang in ("en", "zh")}


def _tree_version() -> str:
    return code_version([prompts_sha(SPLIT_PROMPT)], ContextTreeConfig().model_dump())


def tree_metadata(
    frames: dict[str, pl.DataFrame], chunks: dict[str, pl.DataFrame]
) -> dict[str, Any]:
    """Nodes by depth and stop reason, and how many chunks met their quota."""
    nodes = pl.concat(list(frames.values()))
    depth = nodes["origin"].struct.field("depth").to_list() if nodes.height else []
    usable = nodes.filter(pl.col("drop_reason").is_null())
    per_chunk = (
        Counter(usable["origin"].struct.field("chunk_id").to_list()) if usable.height else {}
    )
    all_chunks = pl.concat(list(chunks.values()))
    met = sum(per_chunk.get(r["id"], 0) >= r["quota"] for r in all_chunks.iter_rows(named=True))
    return {
        "nodes": nodes.height,
        "nodes_by_depth": dict(sorted(Counter(depth).items())),
        "nodes_by_stop_reason": dict(sorted(Counter(nodes["stop_reason"].to_list()).items())),
        "usable_questions": usable.height,
        "chunks_meeting_quota": met,
        "quota_met_rate": round(met / max(all_chunks.height, 1), 4),
        "trees": nodes.filter(pl.col("origin").struct.field("depth") == 0).height,
    }


@shard_stage(
    "context_tree",
    ins={"chunks": key("chunks")},
    kinds={"vllm", "parquet"},
    pool=GPU_POOL,
    code_version=_tree_version(),
    checks=["not_empty"],
    required_resource_keys={"llm"},
    description="Every node of every Context-Split-Tree, with its question and stop reason.",
)
def context_tree(
    context: dg.AssetExecutionContext, config: ContextTreeConfig, chunks: Any
) -> Iterator[dg.Output[Any] | dg.AssetCheckResult]:
    """Breadth-first over all chunks of the run: one generate call per level."""
    by_key = inputs_by_partition(context, chunks)
    keys = list(context.partition_keys)
    chunk_list = [row for k in keys for row in by_key[k].iter_rows(named=True)]
    settings = TreeSettings(
        rules=SplitRules(
            min_context_chars=config.min_context_chars,
            min_question_chars=config.min_question_chars,
            min_support=config.min_support,
            max_depth=config.max_depth,
        ),
        max_passes=config.max_passes,
        structured_output=config.structured_output,
    )
    llm = llm_for_role(context, "llm")
    stats: list[GenerationStats] = []

    def generate(requests: Sequence[LLMRequest]) -> Sequence[Completion]:
        context.log.info(f"context_tree: level {len(stats)}, {len(requests)} nodes")
        result = llm.generate(requests)
        stats.append(result.stats)
        return result.completions

    rows = grow_trees(
        chunk_list,
        generate,
        examples=examples_by_language(config.examples_path),
        sampling=SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens),
        settings=settings,
        run_id=context.run.run_id,
        now=run_started_at(context),
    )
    frames = frames_by_partition(rows, keys, TreeNodeRow, origin=AugconOrigin)
    empty = [k for k, f in frames.items() if f.filter(pl.col("drop_reason").is_null()).height == 0]
    yield dg.Output(
        output_for_partitions(context, frames),
        metadata={
            **partitioned_frame_metadata(frames, ["stop_reason", "drop_reason", "text"]),
            **generation_metadata(stats or [GenerationStats()]),
            **drop_metadata(r.drop_reason for r in rows),
            **tree_metadata(frames, by_key),
            "levels": len(stats),
        },
    )
    yield dg.AssetCheckResult(
        check_name="not_empty",
        passed=not empty,
        metadata={"shards_without_usable_questions": empty},
    )
