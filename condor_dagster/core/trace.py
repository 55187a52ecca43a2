"""Walk one row back to the knowledge-tree tag it came from (`condor trace ID`).

The id's form tells where to look: `r-...` a refined answer, `a-...` a draft answer, `q-...` a
question (an SFT sample uses its refined answer's id), anything else a knowledge-tree node id
such as `healthcare.3d804971`. The row is found with a lazy, filtered Parquet scan of that
stage's files (no stage is loaded into memory whole), then `parent_id` is followed stage by
stage, each time in the same tag's file first:

    refined_answers -> draft_answers -> raw_questions (+ the deduplicated_questions decision)
        -> knowledge_tree leaf -> ... -> root

A link that is missing (a partition rebuilt or deleted since) ends the chain with a warning in
`Trace.warnings` instead of an error; an id that is not there at all raises `TraceError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from condor_dagster.core.paths import data_dir
from condor_dagster.core.records import Lineage, RefineRound
from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN
from condor_dagster.core.taxonomy import PATH_TEXT_SEPARATOR

TREE_STAGE = "knowledge_tree"
TREE_FILE = f"{TREE_STAGE}.parquet"
DEDUP_STAGE = "deduplicated_questions"
STAGE_OF_PREFIX = {"r": "refined_answers", "a": "draft_answers", "q": "raw_questions"}
# Where each stage's parent_id points.
PARENT_STAGE = {
    "refined_answers": "draft_answers",
    "draft_answers": "raw_questions",
    "raw_questions": TREE_STAGE,
}
ID_HINT = (
    "ids look like r-…, a-…, q-… (a refined answer, a draft answer, a question; an SFT sample "
    "has its refined answer's id) or a tag id such as healthcare.3d804971"
)
HOW_TO_MAKE_DATA = (
    "create data with `make demo` (or `condor demo`), or point --data-dir (CONDOR_DATA_DIR, "
    "CONDOR_ASSETS_DIR) at the data directory of a run"
)

_ROW_ID = re.compile(r"([raq])-[0-9a-f]{1,64}\Z")
_MAX_TREE_DEPTH = 64
_FILE_COLUMN = "__trace_file"
_BIG_COLUMNS = ("embedding",)  # never needed for a trace; can be most of a file's bytes


class TraceError(ValueError):
    """The id is malformed or not in the data, or there is no data to search."""


class TraceStep(BaseModel):
    """One generated row on the way back from the traced id to its question."""

    model_config = ConfigDict(frozen=True)

    stage: str
    """Asset the row belongs to: refined_answers, draft_answers or raw_questions."""
    id: str
    parent_id: str
    """The row it was made from (for a question: its tag node id)."""
    text: str
    """What this stage produced: the answer, or the question."""
    lineage: Lineage | None
    """The LLM call that produced `text` (for a refined answer whose rounds rewrote nothing:
    the call that ended refinement)."""
    file: str
    """Parquet file the row was read from."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Stage-specific fields: task, difficulty, drop_reason, truncated, stop_reason, ..."""


class DedupDecision(BaseModel):
    """What deduplicated_questions decided for the question."""

    model_config = ConfigDict(frozen=True)

    question_id: str
    kept: bool
    drop_reason: str | None
    duplicate_of: str | None
    """The question this one duplicates."""
    duplicate_text: str | None
    """Text of `duplicate_of`, when it was found."""
    similarity: float | None
    embedding_model: str | None
    file: str


class TreeStep(BaseModel):
    """One knowledge-tree node on the path from the root to the tag."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    parent_id: str | None
    level: int
    name: str
    language: str
    source: str
    """seed, llm or custom."""
    is_leaf: bool
    lineage: Lineage | None
    """The tree-expansion call that named the node (None for seed and custom nodes)."""


class Trace(BaseModel):
    """Where one row came from, from the row back to the root of its tag path."""

    id: str
    """The id that was traced."""
    stage: str
    """Its stage: refined_answers, draft_answers, raw_questions or knowledge_tree."""
    assets_dir: str
    tag_id: str | None
    tag_path: list[str]
    """Names from the root to the tag."""
    language: str | None
    task: str | None
    difficulty: str | None
    steps: list[TraceStep]
    """Generated rows, from the traced id back to its question (empty for a tree node)."""
    dedup: DedupDecision | None
    """The question's dedup decision (None when there is no question or no decision)."""
    rounds: list[RefineRound]
    """Self-Reflection Refinement rounds (critique, rewrite) of a refined answer."""
    tree: list[TreeStep]
    """Tree nodes from the root down to the tag."""
    warnings: list[str]
    """Links that could not be followed (a partition rebuilt or removed since)."""

    @property
    def chain(self) -> list[str]:
        """Every id from the traced one back to the root: rows, then tree nodes leaf -> root."""
        return [s.id for s in self.steps] + [n.node_id for n in reversed(self.tree)]


# ---- finding rows ------------------------------------------------------------------------------
def resolve_assets_dir(path: str | Path | None = None) -> Path:
    """The folder that holds the stage outputs.

    None: CONDOR_ASSETS_DIR, else <CONDOR_DATA_DIR>/assets. A given path may be the assets
    folder itself or a data directory whose `assets/` holds them.
    """
    if path is None:
        env = os.environ.get("CONDOR_ASSETS_DIR")
        return Path(env).expanduser() if env else data_dir() / "assets"
    base = Path(path).expanduser()
    if not _holds_stage_data(base) and (base / "assets").is_dir():
        return base / "assets"
    return base


def _holds_stage_data(folder: Path) -> bool:
    stages = [*STAGE_OF_PREFIX.values(), DEDUP_STAGE]
    return (folder / TREE_FILE).is_file() or any((folder / s).is_dir() for s in stages)


def _stage_files(assets: Path, stage: str) -> list[Path]:
    folder = assets / stage
    if not folder.is_dir():
        return []
    # Hidden names are the IO manager's in-flight temporaries.
    return sorted(p for p in folder.glob("*.parquet") if p.is_file() and not p.name.startswith("."))


def _scan(files: Sequence[Path], column: str, value: str) -> list[dict[str, Any]]:
    """Rows of `files` whose `column` equals `value`: a lazy scan, filter pushed into the reader,
    big columns left unread."""
    try:
        frame = pl.scan_parquet(
            list(files),
            glob=False,
            missing_columns="insert",
            extra_columns="ignore",
            include_file_paths=_FILE_COLUMN,
        )
        wanted = [c for c in frame.collect_schema().names() if c not in _BIG_COLUMNS]
        return frame.select(wanted).filter(pl.col(column) == value).collect().to_dicts()
    except (OSError, pl.exceptions.PolarsError) as exc:
        where = str(files[0]) if len(files) == 1 else f"{len(files)} files under {files[0].parent}"
        raise TraceError(f"could not read {where} while looking for {value!r}: {exc}") from exc


class _Finder:
    def __init__(self, assets: Path) -> None:
        self.assets = assets
        self.warnings: list[str] = []

    def row(self, stage: str, row_id: str, tag_id: str | None = None) -> dict[str, Any] | None:
        """The row of `stage` with `row_id`: in the tag's own file first, then in every file."""
        if tag_id and PARTITION_KEY_PATTERN.match(tag_id):
            own = self.assets / stage / f"{tag_id}.parquet"
            if own.is_file() and (rows := _scan([own], "id", row_id)):
                return self._one(stage, row_id, rows)
        files = _stage_files(self.assets, stage)
        rows = _scan(files, "id", row_id) if files else []
        return self._one(stage, row_id, rows) if rows else None

    def _one(self, stage: str, row_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if len(rows) > 1:
            files = sorted({str(r[_FILE_COLUMN]) for r in rows})
            self.warnings.append(
                f"{row_id} is in {stage} {len(rows)} times ({', '.join(files)}); showing the first"
            )
        return rows[0]

    def not_found(self, stage: str, row_id: str) -> TraceError:
        folder = self.assets / stage
        count = len(_stage_files(self.assets, stage))
        if count == 0:
            where = (
                f"{folder} holds no Parquet files (is {stage} materialized?)"
                if folder.is_dir()
                else f"{folder} does not exist (is {stage} materialized?)"
            )
            return TraceError(f"no row with id {row_id!r}: {where}; {ID_HINT}")
        files = "file" if count == 1 else "files"
        return TraceError(f"no row with id {row_id!r} in {folder} ({count} {files}); {ID_HINT}")

    def tree_chain(self, node_id: str) -> list[TreeStep]:
        """Nodes from the root down to `node_id`; a missing link ends it with a warning."""
        tree_file = self.assets / TREE_FILE
        if not tree_file.is_file():
            self.warnings.append(f"{tree_file} does not exist: the tag path comes from the rows")
            return []
        chain: list[TreeStep] = []
        current: str | None = node_id
        while current is not None and len(chain) < _MAX_TREE_DEPTH:
            rows = _scan([tree_file], "node_id", current)
            if not rows:
                what = "tag" if not chain else f"parent of {chain[-1].node_id}"
                self.warnings.append(
                    f"{what} {current!r} is not in {tree_file} (the tree was rebuilt without "
                    "it?): the path stops there"
                )
                break
            node = rows[0]
            chain.append(
                TreeStep(
                    node_id=node["node_id"],
                    parent_id=node["parent_id"],
                    level=node["level"],
                    name=node["name"],
                    language=node["language"],
                    source=node["source"],
                    is_leaf=node["is_leaf"],
                    lineage=_lineage(node.get("lineage")),
                )
            )
            current = node["parent_id"]
        chain.reverse()
        return chain


def _lineage(value: dict[str, Any] | None) -> Lineage | None:
    if not value or value.get("prompt_sha") is None:
        return None
    return Lineage.model_validate(value)


def _step(stage: str, row: dict[str, Any]) -> TraceStep:
    file = str(row[_FILE_COLUMN])
    if stage == "raw_questions":
        keys = ("task", "difficulty", "sample_index", "drop_reason", "error", "raw_text")
        return TraceStep(
            stage=stage,
            id=row["id"],
            parent_id=row["parent_id"],
            text=row["text"],
            lineage=_lineage(row.get("lineage")),
            file=file,
            details={k: row.get(k) for k in keys},
        )
    if stage == "draft_answers":
        return TraceStep(
            stage=stage,
            id=row["id"],
            parent_id=row["parent_id"],
            text=row["answer"],
            lineage=_lineage(row.get("lineage")),
            file=file,
            details={"question": row.get("question"), "truncated": row.get("truncated")},
        )
    # refined_answers: no row-level lineage; each round carries its calls'.
    rounds = row.get("rounds") or []
    rewrites = [r for r in rounds if r.get("answer") is not None]
    if rewrites:
        lineage = _lineage(rewrites[-1].get("answer_lineage"))
        source = f"round {rewrites[-1]['round']} rewrite"
    else:
        last = rounds[-1] if rounds else {}
        lineage = _lineage(last.get("answer_lineage")) or _lineage(last.get("critique_lineage"))
        source = "the draft (no round rewrote it)"
    return TraceStep(
        stage=stage,
        id=row["id"],
        parent_id=row["parent_id"],
        text=row["answer"],
        lineage=lineage,
        file=file,
        details={
            "answer_from": source,
            "truncated": row.get("truncated"),
            "rounds_run": row.get("rounds_run"),
            "stop_reason": row.get("stop_reason"),
        },
    )


# ---- trace -------------------------------------------------------------------------------------
def trace(id: str, assets_dir: str | Path | None = None) -> Trace:
    """The chain from `id` (r-/a-/q- row id or tree node id) back to the root of its tag path.

    `assets_dir`: the stage outputs folder or a data directory holding `assets/`; default
    CONDOR_ASSETS_DIR or <CONDOR_DATA_DIR>/assets. Raises TraceError for a malformed or unknown
    id and for a missing data directory.
    """
    wanted = id.strip() if isinstance(id, str) else ""
    row_id = _ROW_ID.match(wanted)
    if not row_id and not PARTITION_KEY_PATTERN.match(wanted):
        raise TraceError(f"{id!r} is not an id: {ID_HINT}")
    assets = resolve_assets_dir(assets_dir)
    if not assets.is_dir():
        raise TraceError(f"no pipeline data: {assets} does not exist; {HOW_TO_MAKE_DATA}")
    if not _holds_stage_data(assets):
        raise TraceError(
            f"no pipeline data in {assets} (no {TREE_FILE}, no stage folders); {HOW_TO_MAKE_DATA}"
        )

    finder = _Finder(assets)
    if not row_id:
        return _trace_tree_node(finder, wanted)

    stage = STAGE_OF_PREFIX[row_id.group(1)]
    found = finder.row(stage, wanted)
    if found is None:
        raise finder.not_found(stage, wanted)
    first = found
    steps: list[TraceStep] = []
    rounds: list[RefineRound] = []
    row: dict[str, Any] | None = found
    tag_id: str | None = found.get("tag_id")
    while row is not None:
        steps.append(_step(stage, row))
        if stage == "refined_answers":
            rounds = [RefineRound.model_validate(r) for r in row.get("rounds") or []]
        parent_stage = PARENT_STAGE[stage]
        if parent_stage == TREE_STAGE:
            tag_id = row["parent_id"]
            break
        parent = finder.row(parent_stage, row["parent_id"], row.get("tag_id"))
        if parent is None:
            missing = (
                f"{stage} row {row['id']} names parent {row['parent_id']!r}, which is not in "
                f"{assets / parent_stage} (rebuilt or removed since?)"
            )
            # A refined answer also names its question: skip the missing draft.
            question_id = row.get("question_id")
            if stage == "refined_answers" and question_id:
                parent_stage = "raw_questions"
                parent = finder.row(parent_stage, question_id, row.get("tag_id"))
                missing += f"; going on from its question {question_id}"
            finder.warnings.append(missing if parent else f"{missing}: the chain stops there")
        stage, row = parent_stage, parent

    question = next((s for s in steps if s.stage == "raw_questions"), None)
    dedup = _dedup_decision(finder, question.id, tag_id) if question else None
    tree = finder.tree_chain(tag_id) if tag_id else []
    complete = bool(tree) and tree[0].parent_id is None
    tag_path = [n.name for n in tree] if complete else _split_path(first.get("tag_path"))
    return Trace(
        id=wanted,
        stage=steps[0].stage,
        assets_dir=str(assets),
        tag_id=tag_id,
        tag_path=tag_path,
        language=first.get("language"),
        task=first.get("task"),
        difficulty=first.get("difficulty"),
        steps=steps,
        dedup=dedup,
        rounds=rounds,
        tree=tree,
        warnings=finder.warnings,
    )


def _split_path(text: str | None) -> list[str]:
    return text.split(PATH_TEXT_SEPARATOR) if text else []


def _trace_tree_node(finder: _Finder, node_id: str) -> Trace:
    tree_file = finder.assets / TREE_FILE
    if not tree_file.is_file():
        raise TraceError(
            f"no node with id {node_id!r}: {tree_file} does not exist (is knowledge_tree "
            f"materialized?); {ID_HINT}"
        )
    tree = finder.tree_chain(node_id)
    if not tree:
        nodes = pl.scan_parquet(tree_file).select(pl.len()).collect().item()
        partition = finder.assets / "raw_questions" / f"{node_id}.parquet"
        extra = (
            f"; {partition} exists, so the tree was rebuilt without this tag"
            if partition.is_file()
            else ""
        )
        raise TraceError(
            f"no node with id {node_id!r} in {tree_file} ({nodes} nodes){extra}; {ID_HINT}"
        )
    leaf = tree[-1]
    return Trace(
        id=node_id,
        stage=TREE_STAGE,
        assets_dir=str(finder.assets),
        tag_id=node_id,
        tag_path=[n.name for n in tree],
        language=leaf.language,
        task=None,
        difficulty=None,
        steps=[],
        dedup=None,
        rounds=[],
        tree=tree,
        warnings=finder.warnings,
    )


def _dedup_decision(finder: _Finder, question_id: str, tag_id: str | None) -> DedupDecision | None:
    row = finder.row(DEDUP_STAGE, question_id, tag_id)
    if row is None:
        finder.warnings.append(
            f"no dedup decision for {question_id} in {finder.assets / DEDUP_STAGE} "
            "(is deduplicated_questions materialized for this tag?)"
        )
        return None
    duplicate_of = row.get("duplicate_of")
    duplicate = finder.row(DEDUP_STAGE, duplicate_of, tag_id) if duplicate_of else None
    return DedupDecision(
        question_id=question_id,
        kept=bool(row["kept"]),
        drop_reason=row.get("drop_reason"),
        duplicate_of=duplicate_of,
        duplicate_text=duplicate.get("text") if duplicate else None,
        similarity=row.get("similarity"),
        embedding_model=row.get("embedding_model"),
        file=str(row[_FILE_COLUMN]),
    )


# ---- output ------------------------------------------------------------------------------------
def trace_to_dict(trace: Trace) -> dict[str, Any]:
    """A JSON-serialisable dict: datetimes as ISO 8601 strings, sampling params as objects,
    plus `chain` (every id from the traced one back to the root)."""
    data = trace.model_dump(mode="json")
    data["chain"] = trace.chain
    decoded: dict[str, Any] = _decode_sampling(data)
    return decoded


def _decode_sampling(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_sampling(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _decode_sampling(v) for k, v in value.items()}
    if "prompt_sha" in out and isinstance(out.get("sampling"), str):
        with contextlib.suppress(ValueError):  # not JSON: keep the stored string
            out["sampling"] = json.loads(out["sampling"])
    return out


def format_trace(trace: Trace, max_chars: int | None = 400) -> str:
    """A human-readable report, stage by stage from the traced id back to the root; texts are
    cut at `max_chars` characters (None: whole)."""
    lines = [f"trace {trace.id} ({trace.stage})"]
    if trace.tag_id:
        lines.append(f"  tag: {PATH_TEXT_SEPARATOR.join(trace.tag_path)}  [{trace.tag_id}]")
    facts = [
        f"{k} {v}"
        for k, v in (
            ("language", trace.language),
            ("task", trace.task),
            ("difficulty", trace.difficulty),
        )
        if v
    ]
    if facts:
        lines.append("  " + ", ".join(facts))
    lines.append(f"  data: {trace.assets_dir}")
    number = 0
    for step in trace.steps:
        number += 1
        lines.append("")
        lines.append(f"[{number}] {step.stage}  {step.id}  <- {step.parent_id}")
        label = "question" if step.stage == "raw_questions" else "answer"
        lines += _text_block(label, step.text, max_chars)
        lines += _step_details(step, max_chars)
        if step.stage == "refined_answers":
            lines += _round_lines(trace.rounds, max_chars)  # every call of the row, per round
        elif step.lineage:
            lines += _lineage_lines(step.lineage, "    ")
        if step.stage == "raw_questions":
            lines += _dedup_lines(trace.dedup, max_chars)
        lines.append(f"    file: {step.file}")
    number += 1
    lines.append("")
    lines.append(f"[{number}] {TREE_STAGE}  (root -> tag)")
    if not trace.tree:
        lines.append("    (no tree nodes found)")
    for node in trace.tree:
        leaf = ", leaf" if node.is_leaf else ""
        lines.append(
            f"    {'  ' * node.level}{node.name}  [{node.node_id}]  "
            f"({node.source}, {node.language}{leaf})"
        )
        if node.lineage:
            lines += _lineage_lines(node.lineage, "    " + "  " * node.level + "  ", short=True)
    if trace.warnings:
        lines.append("")
        lines += [f"warning: {w}" for w in trace.warnings]
    return _terminal_safe("\n".join(lines))


# Model text may hold escape sequences and bidi overrides that would rewrite the terminal.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _terminal_safe(text: str) -> str:
    return _UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text)


def _cut(text: str, max_chars: int | None) -> str:
    if max_chars is None or len(text) <= max_chars:
        return text
    return f"{text[:max_chars].rstrip()}… [{len(text) - max_chars} more characters]"


def _text_block(
    label: str, text: str | None, max_chars: int | None, indent: str = "    "
) -> list[str]:
    if text is None:
        return [f"{indent}{label}: (none)"]
    if text == "":
        return [f"{indent}{label}: (empty)"]
    body = _cut(text, max_chars).splitlines() or [""]
    pad = indent + " " * (len(label) + 2)
    return [f"{indent}{label}: {body[0]}"] + [f"{pad}{line}" for line in body[1:]]


def _step_details(step: TraceStep, max_chars: int | None) -> list[str]:
    d = step.details
    if step.stage == "raw_questions":
        out = [f"    sample {d.get('sample_index')}"]
        if d.get("drop_reason"):
            out[0] += f", dropped at generation: {d['drop_reason']}"
            if d.get("error"):
                out.append(f"    error: {d['error']}")
            if d.get("raw_text"):
                out += _text_block("raw text", d["raw_text"], max_chars)
        return out
    if step.stage == "draft_answers":
        return ["    truncated (hit max_tokens)"] if d.get("truncated") else []
    out = [
        f"    final answer from {d.get('answer_from')}; rounds_run {d.get('rounds_run')}, "
        f"stop_reason {d.get('stop_reason')}" + (", truncated" if d.get("truncated") else "")
    ]
    return out


def _lineage_lines(lineage: Lineage, indent: str, short: bool = False) -> list[str]:
    prompt = f"prompt {lineage.prompt_name} sha {lineage.prompt_sha}"
    model = f"model {lineage.model} ({lineage.engine} {lineage.engine_version})"
    created = lineage.created_at.isoformat(timespec="seconds")
    run = f"run {lineage.run_id} at {created}"
    if short:
        return [f"{indent}{prompt} | {model} | seed {lineage.seed} | {run}"]
    cached = ", replayed from cache" if lineage.cached else ""
    return [
        f"{indent}{prompt} | {model}",
        f"{indent}sampling {_sampling_text(lineage.sampling)} | seed {lineage.seed}",
        f"{indent}finish {lineage.finish_reason} | tokens {lineage.prompt_tokens} prompt + "
        f"{lineage.completion_tokens} completion{cached}",
        f"{indent}{run}",
    ]


def _sampling_text(sampling: str) -> str:
    try:
        params = json.loads(sampling)
    except ValueError:
        return sampling
    if not isinstance(params, dict):
        return sampling
    shown = [f"{k}={v}" for k, v in params.items() if v not in ([], None)]
    return " ".join(shown) if shown else "(defaults)"


def _round_lines(rounds: Sequence[RefineRound], max_chars: int | None) -> list[str]:
    out: list[str] = []
    for r in rounds:
        out.append(f"    round {r.round} critique:")
        if r.critique_error:
            out.append(f"      critique unusable: {r.critique_error}")
        for label, items in (
            ("strengths", r.strengths),
            ("weaknesses", r.weaknesses),
            ("suggestions", r.suggestions),
        ):
            out.append(f"      {label}:" + ("" if items else " (none)"))
            out += [f"        - {_cut(item, max_chars)}" for item in items]
        out += _lineage_lines(r.critique_lineage, "      ")
        if r.answer is not None:
            cut = " (truncated)" if r.truncated else ""
            out.append(f"    round {r.round} rewrite{cut}:")
            out += _text_block("answer", r.answer, max_chars, indent="      ")
        elif r.answer_error:
            out.append(f"    round {r.round} rewrite not used: {r.answer_error}")
        if r.answer_lineage:
            out += _lineage_lines(r.answer_lineage, "      ")
    return out


def _dedup_lines(dedup: DedupDecision | None, max_chars: int | None) -> list[str]:
    if dedup is None:
        return ["    dedup: (no decision found)"]
    model = f" ({dedup.embedding_model})" if dedup.embedding_model else ""
    if dedup.kept:
        return [f"    dedup: kept{model}"]
    out = [f"    dedup: dropped, {dedup.drop_reason}{model}"]
    if dedup.duplicate_of:
        similarity = f", similarity {dedup.similarity:.3f}" if dedup.similarity is not None else ""
        out.append(f"      duplicate of {dedup.duplicate_of}{similarity}")
        if dedup.duplicate_text is not None:
            out += _text_block("which reads", dedup.duplicate_text, max_chars, indent="      ")
    return out


__all__ = [
    "DedupDecision",
    "Trace",
    "TraceError",
    "TraceStep",
    "TreeStep",
    "format_trace",
    "resolve_assets_dir",
    "trace",
    "trace_to_dict",
]
