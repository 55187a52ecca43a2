"""World Knowledge Tree expansion: coarse to fine, level by level, given the path so far.

Pure logic over a `generate` callable (the LLM resource's), so it runs the same against the real
engine or a scripted one. Every name the LLM proposes is either a node or a recorded drop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from condor_dagster.core.language import prompt_language
from condor_dagster.core.llm import GenerateFn, LLMRequest, SamplingParams
from condor_dagster.core.prompts import load_prompt
from condor_dagster.core.quality import repetition_problem, tree_name_problem
from condor_dagster.core.rows import Lineage
from condor_dagster.core.tag_ids import name_problem, normalize_name, sibling_key
from condor_dagster.methods.condor.records import TagNames
from condor_dagster.methods.condor.taxonomy import TreeNode

PROMPT = "condor/tree_expand"


@dataclass(frozen=True)
class TreeDrop:
    """A proposed child name that did not become a node, and why."""

    parent_id: str
    level: int
    raw_name: str
    reason: str
    """parse_failed, truncated, empty, too_long, garbage, not_a_name (`tag_ids.name_problem`),
    echoes_instructions, repeats_ancestor (`quality.tree_name_problem`), degenerate_repetition
    (`quality.repetition_problem`), duplicate_sibling,
    over_fan_out."""


@dataclass
class TreeExpansion:
    nodes: list[TreeNode]
    lineage: dict[str, Lineage] = field(default_factory=dict)
    """node_id -> lineage of the completion that proposed it (LLM nodes only)."""
    drops: list[TreeDrop] = field(default_factory=list)


def expansion_request(node: TreeNode, count: int, sampling: SamplingParams) -> LLMRequest:
    prompt = load_prompt(PROMPT, prompt_language(node.language))
    messages = prompt.render(path=node.path_text, name=node.name, count=count)
    return LLMRequest(messages=messages, sampling=sampling, schema=TagNames)


def expand_tree(
    seeds: Sequence[TreeNode],
    generate: GenerateFn,
    *,
    depth: int,
    fan_out: Sequence[int],
    sampling: SamplingParams,
    run_id: str,
    now: dt.datetime,
) -> TreeExpansion:
    """Grow `seeds` to `depth` levels (root = level 0). `fan_out[level]` children are asked
    for every childless node at `level`; the user's own levels and custom tags are kept as
    they are; a node with no child other than custom tags is expanded below the leaf level."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1 (1 = roots are the tags), got {depth}")
    if len(fan_out) < depth - 1:
        raise ValueError(
            f"fan_out needs one count per level below the roots ({depth - 1}), got {list(fan_out)}"
        )
    nodes = list(seeds)
    children: dict[str, list[TreeNode]] = {}
    for n in nodes:
        if n.parent_id is not None:
            children.setdefault(n.parent_id, []).append(n)
    result = TreeExpansion(nodes=nodes)

    for level in range(depth - 1):
        # Custom (trending) tags hang beside the tree: a root with only custom children is
        # still expanded.
        frontier = [
            n
            for n in nodes
            if n.level == level
            and n.source != "custom"
            and not any(c.source != "custom" for c in children.get(n.node_id, []))
        ]
        if not frontier:
            continue
        count = fan_out[level]
        requests = [expansion_request(n, count, sampling) for n in frontier]
        completions = generate(requests)
        for parent, request, completion in zip(frontier, requests, completions, strict=True):
            if completion.parse_error is not None:
                reason = "truncated" if completion.truncated else "parse_failed"
                result.drops.append(TreeDrop(parent.node_id, level + 1, completion.text, reason))
                continue
            assert isinstance(completion.parsed, TagNames)
            prompt = load_prompt(PROMPT, prompt_language(parent.language))
            lineage = Lineage.of(completion, request, prompt, run_id, now)
            prompt_text = "\n".join(m.content for m in request.messages)
            siblings = {sibling_key(c.name) for c in children.get(parent.node_id, [])}
            added = 0
            for raw in completion.parsed.names:
                name = normalize_name(raw)
                problem = name_problem(raw)  # before normalizing: it folds line breaks away
                if problem is None:
                    # A small model echoes the prompt ("Sub-topics") or repeats the parent.
                    problem = tree_name_problem(name, parent.path, prompt_text)
                if problem is None:
                    # "florida-jenkins-2020-00-20-20-20-20-20-20-...": digits count in names.
                    problem = repetition_problem(name, letters_only=False)
                if problem is None and sibling_key(name) in siblings:
                    problem = "duplicate_sibling"
                if problem is None and added >= count:
                    problem = "over_fan_out"
                if problem is not None:
                    result.drops.append(TreeDrop(parent.node_id, level + 1, raw, problem))
                    continue
                child = TreeNode.from_path(
                    [*parent.path, name], language=parent.language, source="llm", is_leaf=True
                )
                siblings.add(sibling_key(name))
                children.setdefault(parent.node_id, []).append(child)
                nodes.append(child)
                result.lineage[child.node_id] = lineage
                added += 1

    # A node is a leaf (a tag partition) when nothing hangs below it, whatever its level.
    result.nodes = [
        n
        if n.is_leaf == (n.node_id not in children)
        else n.model_copy(update={"is_leaf": n.node_id not in children})
        for n in nodes
    ]
    return result
