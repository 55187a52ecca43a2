"""AugCon's Context-Split-Tree, grown breadth-first across every chunk at once (pure).

Each level of every tree of every chunk in the run goes to the engine as one `generate` call,
so the batch stays full however the trees are shaped; never one request per node. A node asks
the model for a question its context answers and for the context split into two parts; the
stop rules (split_rules) decide whether the parts become the next level's contexts. Once all of
a chunk's trees are finished and it holds fewer usable questions than its target, a new tree
over the same chunk (the next `tree_pass`, sampled with another seed) joins the next level,
up to `max_passes` trees per chunk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from condor_dagster.core.language import prompt_language
from condor_dagster.core.llm import Completion, GenerateFn, LLMRequest, SamplingParams
from condor_dagster.core.prompts import load_prompt
from condor_dagster.core.quality import question_problem
from condor_dagster.core.rows import DropReason, Lineage, content_id
from condor_dagster.methods.augcon.examples import QAExample, format_examples
from condor_dagster.methods.augcon.records import AugconOrigin, SplitOutput, TreeNodeRow
from condor_dagster.methods.augcon.split_rules import (
    SplitRules,
    is_leaf_context,
    parse_marked_up,
    split_outcome,
)

SPLIT_PROMPT = "augcon/split"
EXAMPLES_PER_PROMPT = 3


class TreeSettings(BaseModel):
    """How trees grow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: SplitRules = SplitRules()
    """Where recursion stops."""
    max_passes: int = Field(default=3, ge=1, le=20)
    """Trees per chunk at most: a chunk short of its target after a tree gets another."""
    structured_output: bool = True
    """JSON schema output; False parses the "Question: / Part 1: / Part 2:" text form."""


@dataclass(frozen=True)
class NodeJob:
    """One node waiting for its question and split."""

    chunk: Mapping[str, Any]
    """The root chunk row (augcon/chunks)."""
    parent_id: str
    """The parent node's id (the chunk's for a root)."""
    node_path: str
    depth: int
    tree_pass: int
    context: str

    @property
    def id(self) -> str:
        return content_id("cn", self.chunk["id"], self.tree_pass, self.node_path, self.context)


def root_job(chunk: Mapping[str, Any], tree_pass: int) -> NodeJob:
    return NodeJob(chunk, chunk["id"], "", 0, tree_pass, chunk["text"])


def pick_examples(examples: Sequence[QAExample], context: str) -> list[QAExample]:
    """Three examples chosen by the context's hash, so prompts vary across nodes but the same
    node always gets the same prompt (and so the same cache key)."""
    if len(examples) <= EXAMPLES_PER_PROMPT:
        return list(examples)
    start = int(hashlib.sha256(context.encode()).hexdigest()[:8], 16) % len(examples)
    return [examples[(start + i) % len(examples)] for i in range(EXAMPLES_PER_PROMPT)]


def split_request(
    job: NodeJob,
    examples: Sequence[QAExample],
    *,
    sampling: SamplingParams,
    structured: bool,
) -> LLMRequest:
    """The request of one node (the benchmark sends these to the raw engine too)."""
    language = job.chunk["language"]
    template = load_prompt(SPLIT_PROMPT, prompt_language(language))
    shown = format_examples(
        pick_examples(examples, job.context), language=language, with_answers=False
    )
    return LLMRequest(
        messages=template.render(examples=shown, context=job.context),
        sampling=sampling,
        schema=SplitOutput if structured else None,
        sample_index=job.tree_pass,
    )


def _origin(job: NodeJob) -> dict[str, Any]:
    chunk_origin = job.chunk["origin"]
    return AugconOrigin(
        document_id=chunk_origin["document_id"],
        source=chunk_origin["source"],
        chunk_id=job.chunk["id"],
        node_path=job.node_path,
        depth=job.depth,
        tree_pass=job.tree_pass,
        context=job.context,
    ).model_dump()


def _parsed(completion: Completion) -> tuple[str, tuple[str, str]] | None:
    if isinstance(completion.parsed, SplitOutput):
        out = completion.parsed
        return out.question.strip(), (out.part_1, out.part_2)
    return parse_marked_up(completion.text)


def node_row(
    job: NodeJob,
    completion: Completion | None,
    request: LLMRequest | None,
    *,
    rules: SplitRules,
    run_id: str,
    now: dt.datetime,
) -> tuple[TreeNodeRow, tuple[str, ...]]:
    """The row of one node and the contexts of its children (empty unless it split)."""
    base: dict[str, Any] = {
        "id": job.id,
        "parent_id": job.parent_id,
        "method": job.chunk["method"],
        "partition_key": job.chunk["partition_key"],
        "language": job.chunk["language"],
        "origin": _origin(job),
        "sample_index": job.tree_pass,
    }
    if completion is None or request is None:  # a leaf: too short to ask about
        row = TreeNodeRow(
            **base,
            text="",
            stop_reason="short_context",
            part_1=None,
            part_2=None,
            support=[],
            drop_reason="short_context",
            error=None,
            raw_text=None,
            lineage=None,
        )
        return row, ()
    template = load_prompt(SPLIT_PROMPT, prompt_language(job.chunk["language"]))
    lineage = Lineage.of(completion, request, template, run_id, now)
    parsed = _parsed(completion)
    if parsed is None:
        reason: DropReason = "truncated" if completion.truncated else "parse_failed"
        row = TreeNodeRow(
            **base,
            text="",
            stop_reason="parse_failed",
            part_1=None,
            part_2=None,
            support=[],
            drop_reason=reason,
            error=completion.parse_error or "no question and parts found",
            raw_text=completion.text,
            lineage=lineage,
        )
        return row, ()
    question, parts = parsed
    outcome = split_outcome(job.context, question, parts, depth=job.depth, rules=rules)
    drop: DropReason | None = None
    if outcome.stop_reason == "short_question":
        drop = "short_question" if question else "empty_question"
    else:
        drop = question_problem(question, job.chunk["language"])
    row = TreeNodeRow(
        **base,
        text=question,
        stop_reason=outcome.stop_reason,
        part_1=parts[0],
        part_2=parts[1],
        support=list(outcome.support),
        drop_reason=drop,
        error=None,
        raw_text=None,
        lineage=lineage,
    )
    return row, outcome.children


def grow_trees(
    chunks: Sequence[Mapping[str, Any]],
    generate: GenerateFn,
    *,
    examples: Mapping[str, Sequence[QAExample]],
    sampling: SamplingParams,
    settings: TreeSettings,
    run_id: str,
    now: dt.datetime,
) -> list[TreeNodeRow]:
    """Every node of every tree of `chunks` (rows of augcon/chunks), level by level.
    `examples`: the few-shot examples per prompt language ("en", "zh")."""
    rules = settings.rules
    usable = {c["id"]: 0 for c in chunks}
    pending = {c["id"]: 1 for c in chunks}  # nodes of the chunk's current tree not yet grown
    tree_pass = {c["id"]: 0 for c in chunks}
    frontier = [root_job(c, 0) for c in chunks]
    rows: list[TreeNodeRow] = []
    while frontier:
        requests: list[LLMRequest | None] = [
            None
            if is_leaf_context(job.context, rules)
            else split_request(
                job,
                examples[prompt_language(job.chunk["language"])],
                sampling=sampling,
                structured=settings.structured_output,
            )
            for job in frontier
        ]
        sent = [r for r in requests if r is not None]
        answered = iter(generate(sent) if sent else [])
        next_level: list[NodeJob] = []
        for job, request in zip(frontier, requests, strict=True):
            completion = next(answered) if request is not None else None
            row, children = node_row(job, completion, request, rules=rules, run_id=run_id, now=now)
            rows.append(row)
            chunk_id = job.chunk["id"]
            usable[chunk_id] += row.drop_reason is None
            pending[chunk_id] += len(children) - 1
            next_level += [
                NodeJob(
                    job.chunk,
                    row.id,
                    f"{job.node_path}.{n}" if job.node_path else str(n),
                    job.depth + 1,
                    job.tree_pass,
                    part,
                )
                for n, part in enumerate(children, start=1)
            ]
        finished = {job.chunk["id"]: job.chunk for job in frontier if pending[job.chunk["id"]] == 0}
        for chunk_id, chunk in finished.items():  # short of its target: one more tree
            if usable[chunk_id] < chunk["target"] and tree_pass[chunk_id] + 1 < settings.max_passes:
                tree_pass[chunk_id] += 1
                pending[chunk_id] = 1
                next_level.append(root_job(chunk, tree_pass[chunk_id]))
        frontier = next_level
    return rows
