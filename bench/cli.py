"""Command line: which figures exist, which group measures them, in which order they run."""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.core import Context, Figure, Result, Sizes
from bench.report import figure_entry, run_facts, text_table, update_markdown, write_results

FIGURES = [
    Figure(
        "cpu_engine_speedup",
        "x",
        "SmolLM2 tokens/s, the project's CPU engine settings / vLLM's defaults, same requests",
    ),
    Figure(
        "engine_flops_utilization",
        "share",
        "SmolLM2 (prompt + completion) x 2 x params / s, over this machine's float32 GEMM speed",
    ),
    Figure("demo_wall_seconds", "s", "condor demo after set-up, fresh data directory", 360.0, "<="),
    Figure(
        "engine_overhead_ratio",
        "ratio",
        "LLM resource generate() / raw vllm.LLM.chat, same engine and requests",
        1.05,
        "<=",
    ),
    Figure("cache_replay_seconds_per_1k", "s", "replaying 1,000 cached completions"),
    Figure(
        "server_vs_sequential_speedup",
        "x",
        "server client (128 in flight) vs one request at a time, completion tokens/s",
        5.0,
        ">=",
    ),
    Figure(
        "server_vs_offline_ratio",
        "ratio",
        "server client tokens/s / in-process resource tokens/s, same requests",
        aim=0.8,
    ),
    Figure(
        "pipeline_fixed_overhead_s",
        "s",
        "per run, before the first request: engine load + imports + run start",
    ),
    Figure(
        "pipeline_overhead_ms_per_request",
        "ms",
        "draft_answers run minus raw engine on the same prompts, per request",
        5.0,
        "<=",
    ),
    Figure(
        "embed_overhead_ratio",
        "ratio",
        "embedding resource / raw SentenceTransformer.encode, 5,000 questions",
        1.05,
        "<=",
    ),
    Figure("dedup_100k_seconds", "s", "near-duplicate decisions, 100,000 x 384, exact", 10.0, "<="),
    Figure("sgemm_gflops", "GFLOP/s", "this machine's float32 matrix multiply (all cores)"),
    Figure(
        "dedup_100k_floor_seconds",
        "s",
        "lower bound of any exact search here: n^2 x d flops at that speed",
    ),
    Figure(
        "dedup_1m_seconds",
        "s",
        "near-duplicate decisions, 1,000,000 x 384, approximate index",
        120.0,
        "<=",
    ),
    Figure(
        "dedup_1m_recall",
        "share",
        "approximate decisions equal to exact ones, sampled rows with a near-duplicate",
        0.99,
        ">=",
    ),
    Figure(
        "augcon_cst_overhead_ratio",
        "ratio",
        "AugCon's Context-Split-Tree through the LLM resource / raw vllm.LLM.chat, same prompts",
    ),
    Figure(
        "augcon_rouge_filter_seconds_per_100k",
        "s",
        "AugCon's ROUGE-L query filter per root chunk, per 100,000 queries (a fifth Chinese)",
    ),
    Figure(
        "augcon_scorer_train_seconds_per_1k",
        "s",
        "AugCon's query scorer, one epoch of training on CPU, per 1,000 triplets",
    ),
    Figure(
        "export_200k_peak_rss_mb",
        "MB",
        "peak RSS of the sft_dataset run over 200,000 samples (child process)",
        2048.0,
        "<=",
    ),
    Figure(
        "backfill_runs_for_1000_tags",
        "runs",
        "runs a 1,000-partition raw_questions backfill launches (default policy)",
    ),
]
FIGURE_KEYS = [f.key for f in FIGURES]


@dataclass(frozen=True)
class Group:
    name: str
    module: str
    function: str
    keys: tuple[str, ...]
    engine: bool = False
    server: bool = False


# In run order: the LLM groups share one engine and one server, which stop before the CPU-bound
# groups so they do not run beside idle engine processes.
GROUPS = [
    # Child processes with engines of their own: first, before this process holds one.
    Group(
        "cpu_engine", "bench.cpu_engine", "run", ("cpu_engine_speedup", "engine_flops_utilization")
    ),
    Group("demo", "bench.demo", "run", ("demo_wall_seconds",)),
    Group(
        "engine",
        "bench.engine",
        "run",
        ("engine_overhead_ratio", "cache_replay_seconds_per_1k"),
        engine=True,
    ),
    Group(
        "server",
        "bench.server",
        "run",
        ("server_vs_sequential_speedup", "server_vs_offline_ratio"),
        engine=True,
        server=True,
    ),
    Group(
        "pipeline",
        "bench.pipeline",
        "run",
        ("pipeline_fixed_overhead_s", "pipeline_overhead_ms_per_request"),
        engine=True,
    ),
    Group("augcon_tree", "bench.augcon", "run_tree", ("augcon_cst_overhead_ratio",), engine=True),
    Group("embed", "bench.embed", "run", ("embed_overhead_ratio",)),
    Group(
        "dedup_exact",
        "bench.dedup",
        "run_exact",
        ("dedup_100k_seconds", "sgemm_gflops", "dedup_100k_floor_seconds"),
    ),
    Group("dedup_approx", "bench.dedup", "run_approx", ("dedup_1m_seconds", "dedup_1m_recall")),
    Group("augcon_filter", "bench.augcon", "run_filter", ("augcon_rouge_filter_seconds_per_100k",)),
    Group("augcon_scorer", "bench.augcon", "run_scorer", ("augcon_scorer_train_seconds_per_1k",)),
    Group("export", "bench.export", "run", ("export_200k_peak_rss_mb",)),
    Group("backfill", "bench.backfill", "run", ("backfill_runs_for_1000_tags",)),
]


def select(only: str | None) -> list[str]:
    """Figure keys for --only: exact keys or prefixes (e.g. "dedup"), comma separated."""
    if not only:
        return list(FIGURE_KEYS)
    chosen: list[str] = []
    for name in (part.strip() for part in only.split(",") if part.strip()):
        matches = [k for k in FIGURE_KEYS if k == name or k.startswith(name)]
        if not matches:
            raise SystemExit(
                f"--only: no figure named or starting with {name!r}; figures: "
                + ", ".join(FIGURE_KEYS)
            )
        chosen += [m for m in matches if m not in chosen]
    return [k for k in FIGURE_KEYS if k in chosen]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure condor-dagster against the raw engine; see BENCHMARKS.md.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repetition")
    parser.add_argument("--only", help="figures to run: keys or prefixes, comma separated")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument(
        "--output", type=Path, default=Path("bench/results.json"), help="results JSON path"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=Path("BENCHMARKS.md"),
        help="Markdown file whose table section is rewritten",
    )
    parser.add_argument("--model", type=Path, help="model directory (default: the tiny model)")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error(f"--reps must be >= 1, got {args.reps}")
    return args


def ensure_model(path: Path | None, log: Callable[[str], None]) -> Path:
    from condor_dagster.core.paths import models_dir

    if path is not None:
        return path
    tiny = models_dir() / "tiny"
    if not (tiny / "config.json").is_file():
        from condor_dagster.core.tiny_model import build_tiny_model

        log(f"building the tiny model in {tiny}")
        build_tiny_model(tiny)
    return tiny


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keys = select(args.only)
    groups = [g for g in GROUPS if set(g.keys) & set(keys)]
    reps = args.reps or (1 if args.quick else 3)
    sizes = Sizes.quick() if args.quick else Sizes()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="condor-bench-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = Context(args.quick, reps, sizes, workdir, model_dir=Path("."))
        needs_engine = any(g.engine for g in groups)
        if needs_engine:
            ctx.model_dir = ensure_model(args.model, ctx.log)
        results: dict[str, Result] = {}
        try:
            if needs_engine:
                from bench.services import start_services

                ctx.services = start_services(ctx, server=any(g.server for g in groups))
            for group in groups:
                if ctx.services is not None and not group.engine:
                    ctx.log("stopping the engine and server before the CPU-bound figures")
                    ctx.services.stop()
                    ctx.services = None
                group_began = time.perf_counter()
                measure = getattr(importlib.import_module(group.module), group.function)
                results.update(measure(ctx))
                ctx.log(f"{group.name} done in {time.perf_counter() - group_began:.0f} s")
        finally:
            if ctx.services is not None:
                ctx.services.stop()
    wall = time.perf_counter() - began
    model = str(ctx.model_dir) if needs_engine else "(none: no LLM figure run)"
    facts = run_facts(model, args.quick, reps, wall)
    by_key = {f.key: f for f in FIGURES}
    entries = {
        k: figure_entry(by_key[k], results[k], facts["date"], facts["git_commit"]) for k in keys
    }
    document = write_results(args.output, facts, entries, FIGURE_KEYS)
    update_markdown(args.markdown, document)
    print(text_table({**document, "figures": {k: document["figures"][k] for k in keys}}))
    print(f"\nwrote {args.output} and the table in {args.markdown} ({wall / 60:.1f} min)")
    missed = [k for k in keys if entries[k]["holds"] is False]
    if missed:
        print("targets missed: " + ", ".join(missed), file=sys.stderr)
    return 0
