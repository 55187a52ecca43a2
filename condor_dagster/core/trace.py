"""Walk one row of any method back to its origin (`condor trace ID`).

Stages register how to find and show their rows (`register`): the asset key, the id prefix
their rows carry (unique across every method and stage), the text column and the stage their
`parent_id` points to. A method registers how to describe its origin (Condor: the knowledge
tree path of the tag). The id's prefix then tells where to look: the row is found with a lazy,
filtered Parquet scan of that stage's files through the IO manager's store (its own partition's
file first), and `parent_id` is followed stage by stage back to the origin.

A link that is missing (a partition rebuilt or deleted since) ends the chain with a warning in
`Trace.warnings` instead of an error; an id that is not there at all raises `TraceError`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from condor_dagster.core.refine import RefineRound
from condor_dagster.core.rows import Lineage
from condor_dagster.core.storage import AssetStore, store_from_env
from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN

HOW_TO_MAKE_DATA = (
    "create data with `make demo` (or `condor demo`), or point --data-dir (CONDOR_DATA_DIR, "
    "CONDOR_ASSETS_DIR) at the data directory of a run"
)

_ROW_ID = re.compile(r"([a-z]{1,8})-[0-9a-f]{1,64}\Z")
_ID_PREFIX = re.compile(r"[a-z]{1,8}\Z")
_FILE_COLUMN = "__trace_file"
_BIG_COLUMNS = ("embedding",)  # never needed for a trace; can be most of a file's bytes


class TraceError(ValueError):
    """The id is malformed or not in the data, or there is no data to search."""


# ---- registration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TraceStage:
    """How trace finds and shows the rows of one stage."""

    method: str
    key: tuple[str, ...]
    """Asset key path, e.g. ("condor", "draft_answers")."""
    id_prefix: str
    """The prefix of the ids this stage's rows carry ("a" for a-...)."""
    text_column: str
    """The column holding what the stage produced."""
    label: str
    """What the text is: question, answer, ..."""
    parent: tuple[str, ...] | None
    """Key of the stage `parent_id` points to; None: it names the method's origin."""
    details: tuple[str, ...] = ()
    """Columns shown with the row."""
    dedup: tuple[str, ...] | None = None
    """For question stages: the dedup stage holding each question's decision."""

    @property
    def name(self) -> str:
        return "/".join(self.key)


@dataclass(frozen=True)
class TraceMethod:
    """How trace describes one method's origin."""

    method: str
    origin_chain: Callable[[Finder, str], list[TreeStep]] | None = None
    """(finder, origin id) -> nodes from the root down to the origin; None: the row's origin
    struct is the whole story."""
    origin_id: re.Pattern[str] | None = None
    """Ids that name an origin directly (Condor: tag ids), traced as a chain alone."""
    origin_label: str = "origin"
    """What an origin is called in messages (tag, document)."""
    origin_stage: str = ""
    """The asset an origin id is found in (condor/knowledge_tree)."""
    partition_is_origin: bool = False
    """The partition key names the origin (Condor: the tag), so a chain broken before the
    method's first stage still finds it."""


_STAGES: dict[str, TraceStage] = {}
_METHODS: dict[str, TraceMethod] = {}


def register(method: TraceMethod, stages: Sequence[TraceStage]) -> None:
    """Make a method's stages traceable. Id prefixes are unique across every method and stage;
    registering the same stage again is a no-op."""
    for stage in stages:
        if not _ID_PREFIX.match(stage.id_prefix):
            raise ValueError(f"id prefix {stage.id_prefix!r} must be 1 to 8 lowercase letters")
        known = _STAGES.get(stage.id_prefix)
        if known is not None and known != stage:
            raise ValueError(
                f"id prefix {stage.id_prefix!r} of {stage.name} is already used by {known.name}; "
                "give every stage of every method its own prefix"
            )
    _METHODS[method.method] = method
    for stage in stages:
        _STAGES[stage.id_prefix] = stage


def unregister(method: str) -> None:
    """Forget a method's stages (tests that register a method of their own)."""
    _METHODS.pop(method, None)
    for prefix in [p for p, s in _STAGES.items() if s.method == method]:
        del _STAGES[prefix]


def registered_stages() -> dict[str, TraceStage]:
    return dict(_STAGES)


def _stage_by_key(key: tuple[str, ...]) -> TraceStage | None:
    return next((s for s in _STAGES.values() if s.key == key), None)


def id_hint() -> str:
    prefixes = ", ".join(f"{p}-… ({s.name})" for p, s in sorted(_STAGES.items()))
    shown = prefixes or "(no stage registered)"
    return f"ids look like {shown}, or a tag id such as healthcare.3d804971"


# ---- the result --------------------------------------------------------------------------------
class TraceStep(BaseModel):
    """One generated row on the way back from the traced id to its origin."""

    model_config = ConfigDict(frozen=True)

    stage: str
    """Asset key of the row's stage, e.g. condor/draft_answers."""
    label: str
    """What `text` is (question, answer, ...)."""
    id: str
    parent_id: str
    text: str
    lineage: Lineage | None
    """The LLM call that produced `text` (for a refined answer whose rounds rewrote nothing:
    the call that ended refinement)."""
    file: str
    """Parquet file the row was read from."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Stage-specific fields: task, difficulty, drop_reason, truncated, stop_reason, ..."""


class DedupDecision(BaseModel):
    """What the dedup stage decided for the question."""

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
    """One node on the path from the method's root to the origin (Condor: the tag)."""

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
    """The call that named the node (None for seed and custom nodes)."""


class Trace(BaseModel):
    """Where one row came from, from the row back to its origin."""

    id: str
    """The id that was traced."""
    stage: str
    """Its stage's asset key (or the origin stage for an origin id)."""
    method: str | None
    assets_dir: str
    partition_key: str | None
    origin: dict[str, Any]
    """The row's origin struct (Condor: tag_path, task, difficulty)."""
    origin_path: list[str]
    """Names from the root to the origin (Condor: the tag path)."""
    language: str | None
    steps: list[TraceStep]
    """Generated rows, from the traced id back to the method's first stage."""
    dedup: DedupDecision | None
    """The question's dedup decision (None when there is no question or no decision)."""
    rounds: list[RefineRound]
    """Self-Reflection Refinement rounds (critique, rewrite) of a refined answer."""
    origin_chain: list[TreeStep]
    """Origin nodes from the root down (Condor: tree nodes down to the tag)."""
    warnings: list[str]
    """Links that could not be followed (a partition rebuilt or removed since)."""

    @property
    def chain(self) -> list[str]:
        """Every id from the traced one back to the root: rows, then origin nodes."""
        return [s.id for s in self.steps] + [n.node_id for n in reversed(self.origin_chain)]


# ---- finding rows ------------------------------------------------------------------------------
def resolve_store(path: str | Path | None = None) -> AssetStore:
    """The store holding the stage outputs. None: CONDOR_ASSETS_DIR, else
    <CONDOR_DATA_DIR>/assets. A given local path may be the assets folder itself or a data
    directory whose `assets/` holds them; a URL is the assets base."""
    if path is None:
        return store_from_env()
    text = str(path)
    if "://" not in text:
        base = Path(text).expanduser()
        if not _holds_stage_data(AssetStore(str(base))) and (base / "assets").is_dir():
            base = base / "assets"
        text = str(base)
    return AssetStore(text)


def _holds_stage_data(store: AssetStore) -> bool:
    keys = {s.key for s in _STAGES.values()} | {d for s in _STAGES.values() if (d := s.dedup)}
    return any(store.partitions(list(k)) for k in keys) or any(
        store.exists([m, "knowledge_tree"]) for m in _METHODS
    )


def _scan(frames: Sequence[tuple[str, pl.LazyFrame]], column: str, value: str) -> list[dict]:
    """Rows whose `column` equals `value`: lazy scans, filter pushed into the reader, big
    columns left unread."""
    found: list[dict[str, Any]] = []
    for file, frame in frames:
        try:
            names = [c for c in frame.collect_schema().names() if c not in _BIG_COLUMNS]
            rows = frame.select(names).filter(pl.col(column) == value).collect().to_dicts()
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise TraceError(f"could not read {file} while looking for {value!r}: {exc}") from exc
        found += [{**row, _FILE_COLUMN: file} for row in rows]
    return found


class Finder:
    """Looks rows up through the store, collecting warnings on the way."""

    def __init__(self, store: AssetStore) -> None:
        self.store = store
        self.warnings: list[str] = []

    def where(self, key: Sequence[str], partition: str | None = None) -> str:
        return str(self.store.path(list(key), partition))

    def _frames(self, key: Sequence[str], partition: str | None) -> list[tuple[str, pl.LazyFrame]]:
        if partition is not None:
            return [(self.where(key, partition), self.store.scan(list(key), partition))]
        if self.store.is_local:
            files = [str(f) for f in self.store.local_files(list(key))]
            return [(f, pl.scan_parquet(f)) for f in files]
        parts = self.store.partitions(list(key))
        return [(self.where(key, p), self.store.scan(list(key), p)) for p in parts]

    def row(
        self, key: Sequence[str], row_id: str, partition: str | None = None, column: str = "id"
    ) -> dict[str, Any] | None:
        """The row of stage `key` with `row_id`: in the partition's own file first, then in
        every file of the stage."""
        own = partition and PARTITION_KEY_PATTERN.match(partition)
        if own and self.store.exists(list(key), partition):
            rows = _scan(self._frames(key, partition), column, row_id)
            if rows:
                return self._one(key, row_id, rows)
        rows = _scan(self._frames(key, None), column, row_id)
        return self._one(key, row_id, rows) if rows else None

    def unpartitioned_row(self, key: Sequence[str], column: str, value: str) -> dict | None:
        if not self.store.exists(list(key)):
            return None
        rows = _scan([(self.where(key), self.store.scan(list(key)))], column, value)
        return rows[0] if rows else None

    def _one(self, key: Sequence[str], row_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if len(rows) > 1:
            files = sorted({str(r[_FILE_COLUMN]) for r in rows})
            self.warnings.append(
                f"{row_id} is in {'/'.join(key)} {len(rows)} times ({', '.join(files)}); "
                "showing the first"
            )
        return rows[0]

    def not_found(self, stage: TraceStage, row_id: str) -> TraceError:
        count = len(self.store.partitions(list(stage.key)))
        folder = str(self.store.folder(list(stage.key)))
        if count == 0:
            return TraceError(
                f"no row with id {row_id!r}: {folder} holds no Parquet files (is {stage.name} "
                f"materialized?); {id_hint()}"
            )
        files = "file" if count == 1 else "files"
        return TraceError(f"no row with id {row_id!r} in {folder} ({count} {files}); {id_hint()}")


def lineage_of(value: dict[str, Any] | None) -> Lineage | None:
    if not value or value.get("prompt_sha") is None:
        return None
    return Lineage.model_validate(value)


def _step(stage: TraceStage, row: dict[str, Any]) -> TraceStep:
    details = {k: row.get(k) for k in stage.details}
    lineage = lineage_of(row.get("lineage"))
    rounds = row.get("rounds")
    if rounds is not None and "lineage" not in row:
        # A refined answer: no row-level lineage; each round carries its calls'.
        rewrites = [r for r in rounds if r.get("answer") is not None]
        if rewrites:
            lineage = lineage_of(rewrites[-1].get("answer_lineage"))
            details["answer_from"] = f"round {rewrites[-1]['round']} rewrite"
        else:
            last = rounds[-1] if rounds else {}
            lineage = lineage_of(last.get("answer_lineage")) or lineage_of(
                last.get("critique_lineage")
            )
            details["answer_from"] = "the draft (no round rewrote it)"
    return TraceStep(
        stage=stage.name,
        label=stage.label,
        id=row["id"],
        parent_id=row["parent_id"],
        text=row.get(stage.text_column) or "",
        lineage=lineage,
        file=str(row[_FILE_COLUMN]),
        details=details,
    )


# ---- trace -------------------------------------------------------------------------------------
def trace(id: str, assets_dir: str | Path | None = None) -> Trace:
    """The chain from `id` (a registered stage's row id or an origin id such as a tag id) back
    to its origin.

    `assets_dir`: the stage outputs folder (or fsspec URL) or a data directory holding
    `assets/`; default CONDOR_ASSETS_DIR or <CONDOR_DATA_DIR>/assets. Raises TraceError for a
    malformed or unknown id and for a missing data directory.
    """
    wanted = id.strip() if isinstance(id, str) else ""
    row_id = _ROW_ID.match(wanted)
    origin_methods = [m for m in _METHODS.values() if m.origin_id and m.origin_id.match(wanted)]
    if not (row_id and row_id.group(1) in _STAGES) and not origin_methods:
        raise TraceError(f"{id!r} is not an id: {id_hint()}")
    store = resolve_store(assets_dir)
    if store.is_local and not Path(str(store.base.path)).is_dir():
        raise TraceError(f"no pipeline data: {store.base} does not exist; {HOW_TO_MAKE_DATA}")
    if not _holds_stage_data(store):
        raise TraceError(f"no pipeline data in {store.base} (no stage outputs); {HOW_TO_MAKE_DATA}")

    finder = Finder(store)
    if not (row_id and row_id.group(1) in _STAGES):
        return _trace_origin(finder, origin_methods[0], wanted)

    stage: TraceStage | None = _STAGES[row_id.group(1)]
    assert stage is not None
    found = finder.row(stage.key, wanted)
    if found is None:
        raise finder.not_found(stage, wanted)
    first = found
    steps: list[TraceStep] = []
    rounds: list[RefineRound] = []
    row: dict[str, Any] | None = found
    origin_id: str | None = None
    question: tuple[TraceStage, dict[str, Any]] | None = None
    while row is not None and stage is not None:
        steps.append(_step(stage, row))
        if row.get("rounds") is not None and not rounds:
            rounds = [RefineRound.model_validate(r) for r in row.get("rounds") or []]
        if stage.dedup is not None:
            question = (stage, row)
        if stage.parent is None:
            origin_id = row["parent_id"]
            break
        parent_stage = _stage_by_key(stage.parent)
        parent = (
            finder.row(stage.parent, row["parent_id"], row.get("partition_key"))
            if parent_stage
            else None
        )
        if parent is None:
            missing = (
                f"{stage.name} row {row['id']} names parent {row['parent_id']!r}, which is not in "
                f"{finder.where(stage.parent)} (rebuilt or removed since?)"
            )
            # A refined answer also names its question: skip the missing answer.
            question_id = row.get("question_id")
            question_stage = _question_stage(stage)
            if question_id and question_stage is not None:
                parent_stage = question_stage
                parent = finder.row(question_stage.key, question_id, row.get("partition_key"))
                missing += f"; going on from its question {question_id}"
            finder.warnings.append(missing if parent else f"{missing}: the chain stops there")
        stage, row = parent_stage, parent

    method = _METHODS.get(first.get("method") or "") or _METHODS.get(
        _STAGES[row_id.group(1)].method
    )
    dedup = _dedup_decision(finder, *question) if question else None
    if origin_id is None and method and method.partition_is_origin:
        origin_id = first.get("partition_key")
    chain: list[TreeStep] = []
    if origin_id and method and method.origin_chain:
        chain = method.origin_chain(finder, origin_id)
    complete = bool(chain) and chain[0].parent_id is None
    origin = dict(first.get("origin") or {})
    path = [n.name for n in chain] if complete else _split_path(origin.get("tag_path"))
    return Trace(
        id=wanted,
        stage=steps[0].stage,
        method=first.get("method"),
        assets_dir=str(store.base),
        partition_key=first.get("partition_key"),
        origin=origin,
        origin_path=path,
        language=first.get("language"),
        steps=steps,
        dedup=dedup,
        rounds=rounds,
        origin_chain=chain,
        warnings=finder.warnings,
    )


def _question_stage(stage: TraceStage) -> TraceStage | None:
    """The method's question stage (the one with a dedup decision), for skipping a lost link."""
    return next(
        (s for s in _STAGES.values() if s.method == stage.method and s.dedup is not None), None
    )


def _split_path(text: str | None) -> list[str]:
    return text.split(" > ") if text else []


def _trace_origin(finder: Finder, method: TraceMethod, origin_id: str) -> Trace:
    chain = method.origin_chain(finder, origin_id) if method.origin_chain else []
    if not chain:
        raise TraceError(
            f"no {method.origin_label} with id {origin_id!r} "
            f"({'; '.join(finder.warnings) or 'not found'}); {id_hint()}"
        )
    leaf = chain[-1]
    return Trace(
        id=origin_id,
        stage=method.origin_stage or f"{method.method}/{method.origin_label}",
        method=method.method,
        assets_dir=str(finder.store.base),
        partition_key=origin_id,
        origin={},
        origin_path=[n.name for n in chain],
        language=leaf.language,
        steps=[],
        dedup=None,
        rounds=[],
        origin_chain=chain,
        warnings=finder.warnings,
    )


def _dedup_decision(
    finder: Finder, stage: TraceStage, question: dict[str, Any]
) -> DedupDecision | None:
    assert stage.dedup is not None
    partition = question.get("partition_key")
    row = finder.row(stage.dedup, question["id"], partition)
    if row is None:
        finder.warnings.append(
            f"no dedup decision for {question['id']} in {finder.where(stage.dedup)} "
            f"(is {'/'.join(stage.dedup)} materialized for this partition?)"
        )
        return None
    duplicate_of = row.get("duplicate_of")
    duplicate = finder.row(stage.dedup, duplicate_of, partition) if duplicate_of else None
    return DedupDecision(
        question_id=question["id"],
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
    if trace.partition_key:
        where = " > ".join(trace.origin_path)
        lines.append(f"  {trace.method or '?'}: {where}  [{trace.partition_key}]".rstrip())
    shown = {k: v for k, v in trace.origin.items() if k != "tag_path" and isinstance(v, str | int)}
    facts = [
        f"{k} {_cut(str(v), 80)}" for k, v in (("language", trace.language), *shown.items()) if v
    ]
    if facts:
        lines.append("  " + ", ".join(facts))
    lines.append(f"  data: {trace.assets_dir}")
    number = 0
    for step in trace.steps:
        number += 1
        lines.append("")
        lines.append(f"[{number}] {step.stage}  {step.id}  <- {step.parent_id}")
        lines += _text_block(step.label, step.text, max_chars)
        lines += _step_details(step, max_chars)
        if "answer_from" in step.details:
            lines += _round_lines(trace.rounds, max_chars)  # every call of the row, per round
        elif step.lineage:
            lines += _lineage_lines(step.lineage, "    ")
        if trace.dedup is not None and step.id == trace.dedup.question_id:
            lines += _dedup_lines(trace.dedup, max_chars)
        elif step.label == "question" and trace.dedup is None:
            lines += _dedup_lines(None, max_chars)
        lines.append(f"    file: {step.file}")
    number += 1
    lines.append("")
    lines.append(f"[{number}] origin  (root -> {trace.partition_key or trace.id})")
    if not trace.origin_chain:
        lines.append("    (no origin nodes found)")
    for node in trace.origin_chain:
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
    if "answer_from" in d:
        return [
            f"    final answer from {d.get('answer_from')}; rounds_run {d.get('rounds_run')}, "
            f"stop_reason {d.get('stop_reason')}" + (", truncated" if d.get("truncated") else "")
        ]
    out: list[str] = []
    if "sample_index" in d:
        out.append(f"    sample {d.get('sample_index')}")
    if d.get("drop_reason") and step.label == "question":
        line = f"dropped at generation: {d['drop_reason']}"
        out = [f"{out[0]}, {line}"] if out else [f"    {line}"]
        if d.get("error"):
            out.append(f"    error: {d['error']}")
        if d.get("raw_text"):
            out += _text_block("raw text", d["raw_text"], max_chars)
    if d.get("truncated"):
        out.append("    truncated (hit max_tokens)")
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
    "TraceMethod",
    "TraceStage",
    "TraceStep",
    "TreeStep",
    "format_trace",
    "register",
    "resolve_store",
    "trace",
    "trace_to_dict",
    "unregister",
]
