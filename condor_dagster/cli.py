"""The `condor` command: models, tiny-model, demo, trace, serve."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from condor_dagster.core.paths import condor_home, data_dir


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from condor_dagster.core.tiny_model import build_tiny_model

    began = time.perf_counter()
    out = build_tiny_model(args.dir, seed=args.seed)
    print(f"tiny random-weight Llama model written to {out} in {time.perf_counter() - began:.1f}s")
    print("its text is noise: it proves the machinery, not the data")
    return 0


def ensure_demo_model() -> str:
    """The model the demo and `condor serve` run: CONDOR_MODEL (a known model name is installed
    on first use), else SmolLM2-135M-Instruct under <CONDOR_HOME>/models (installed once).
    Sets CONDOR_MODEL to the resolved path, so the definitions and run workers see it."""
    from condor_dagster.resources.model_store import (
        DEFAULT_MODEL,
        KNOWN_MODELS,
        is_installed,
        model_path,
        resolve_model,
    )

    ref = os.environ.get("CONDOR_MODEL") or DEFAULT_MODEL
    if ref in KNOWN_MODELS and not is_installed(ref):
        print(f"[demo] installing model {ref} into {model_path(ref)} (once) ...", flush=True)
    model = resolve_model(ref)
    os.environ["CONDOR_MODEL"] = model
    return model


# Written into instance configs the CLI creates: this machine has no internet, and a user's
# pipeline has no reason to report usage.
TELEMETRY_OFF = "telemetry:\n  enabled: false\n"


def _dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or condor_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.is_file() or not config.read_text().strip():
        config.write_text(TELEMETRY_OFF)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# The demo's completion budgets: enough for a small model's three questions, a short answer, a
# critique and a verdict. The stages' own defaults (512 to 1,024 tokens) suit real models; a
# 135M model that rambles or loops runs to whatever budget it is given, and on 2 cores the
# longest completion of a batch sets the stage's wall time.
DEMO_MAX_TOKENS = {
    "raw_questions": {"max_tokens": 256},
    "draft_answers": {"max_tokens": 320},
    "refined_answers": {"critique_max_tokens": 384, "max_tokens": 320},
    "refine_quality": {"max_tokens": 128},
}


def demo_tag_run_config() -> dict[str, Any]:
    return {"ops": {f"condor__{op}": {"config": dict(c)} for op, c in DEMO_MAX_TOKENS.items()}}


def _print_stage(result: Any, node: str, keys: tuple[str, ...]) -> None:
    for materialization in result.asset_materializations_for_node(node)[:1]:
        meta = {k: v.value for k, v in materialization.metadata.items()}
        rows = meta.get("rows_per_partition")
        figures = [f"partitions={len(rows)}, rows={sum(rows.values())}"] if rows else []
        figures += [f"{k}={meta[k]}" for k in keys if k in meta]
        print(f"  {node:>24}: " + ", ".join(figures))


def _cmd_demo(args: argparse.Namespace) -> int:
    unknown = sorted(set(args.methods) - {"condor", "augcon"})
    if unknown:
        print(f"[demo] unknown methods {unknown}; choose from condor, augcon", file=sys.stderr)
        return 2
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from condor_dagster.resources.model_store import ModelInstallError

    try:
        model = ensure_demo_model()
    except ModelInstallError as exc:
        print(f"[demo] {exc}", file=sys.stderr)
        return 1
    try:
        return _run_demo(args, model)
    finally:
        # The process exits as soon as the demo is done: no engine left for exit handlers.
        from condor_dagster.resources.vllm_engine import shutdown_engines

        shutdown_engines()


def _run_demo(args: argparse.Namespace, model: str) -> int:
    home = _dagster_home()
    print(f"[demo] model: {model}")
    print(f"[demo] data dir: {data_dir()}   DAGSTER_HOME: {home}", flush=True)

    import dagster as dg

    from condor_dagster.definitions import defs, resources_from_env
    from condor_dagster.methods.condor.sensors import sync_tags

    began = time.perf_counter()
    tree_config = {
        "max_roots": args.roots,
        "subdomains_per_root": args.fan_out,
        "leaves_per_subdomain": args.fan_out,
        "max_tokens": 160,
    }
    with dg.DagsterInstance.get() as instance:
        print("[demo] Condor, stage 1: knowledge_tree (LLM expands the seed roots)", flush=True)
        tree = defs.resolve_job_def("knowledge_tree_job").execute_in_process(
            run_config={"ops": {"condor__knowledge_tree": {"config": tree_config}}},
            instance=instance,
        )
        if not tree.success:
            print("[demo] knowledge_tree failed; see the log above", file=sys.stderr)
            return 1
        # What the tags sensor does under the daemon: add the new leaf tags as partitions.
        io_manager = resources_from_env()["io_manager"]
        sync_tags(instance, io_manager)  # type: ignore[arg-type]
        keys = list(instance.get_dynamic_partitions("tags"))[: args.max_tags]
        print(
            f"[demo] Condor, stage 2: raw_questions -> deduplicated_questions -> draft_answers "
            f"-> refined_answers -> sft_candidates for {len(keys)} tag partitions in one run",
            flush=True,
        )
        tag_run = defs.resolve_job_def("condor_tags_job").execute_in_process(
            run_config=demo_tag_run_config(),
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            },
        )
        if not tag_run.success:
            print("[demo] the tag run failed; see the log above", file=sys.stderr)
            return 1
        augcon_runs = []
        if "augcon" in args.methods:
            augcon_runs = _run_augcon(defs, instance)
            if not augcon_runs or not augcon_runs[-1].success:
                print("[demo] the AugCon runs failed; see the log above", file=sys.stderr)
                return 1
        print(
            "[demo] last stage: sft_dataset (cross-partition dedup, filters, exports)", flush=True
        )
        export = defs.resolve_job_def("sft_dataset_job").execute_in_process(instance=instance)
    if not export.success:
        print("[demo] sft_dataset failed; see the log above", file=sys.stderr)
        return 1
    print(
        f"\n[demo] runs {tree.run_id}, {tag_run.run_id}, "
        + "".join(f"{r.run_id}, " for r in augcon_runs)
        + f"and {export.run_id} succeeded in "
        f"{time.perf_counter() - began:.1f}s"
    )
    _print_stage(tree, "condor__knowledge_tree", ("leaf_tags", "dropped_names", "requests"))
    stage_keys = (
        "requests",
        "cache_hits",
        "tokens_per_second",
        "parse_failure_rate",
        "truncation_rate",
        "kept",
        "dropped_by_reason",
        "stop_reasons",
    )
    for node in (
        "raw_questions",
        "deduplicated_questions",
        "draft_answers",
        "refined_answers",
        "refine_quality",
        "sft_candidates",
    ):
        _print_stage(tag_run, f"condor__{node}", (*stage_keys, "refined_win_rate", "judged"))
    for result, nodes in zip(augcon_runs, AUGCON_DEMO_NODES, strict=False):
        for node in nodes:
            _print_stage(result, f"augcon__{node}", (*stage_keys, *AUGCON_KEYS))
    _print_stage(export, "sft_dataset", ("samples", "dropped_by_reason"))
    meta = export.asset_materializations_for_node("sft_dataset")[0].metadata
    print(f"\n[demo] Parquet files per stage: {data_dir() / 'assets'}")
    export_dir = Path(str(meta["export_dir"].value))
    print(f"[demo] exports and dataset card: {export_dir}")
    for path in sorted(p for p in export_dir.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(export_dir)}")
    _print_trace_example()
    _print_model_note(model)
    print(
        "\nOpen the Dagster UI on the same instance to see the assets, lineage and metadata:\n"
        f"  DAGSTER_HOME={home} CONDOR_MODEL={model} .venv/bin/dagster dev -w workspace.yaml\n"
    )
    return 0


AUGCON_DEMO_NODES = (
    ("chunks", "context_tree"),
    ("scorer_triplets", "query_scorer", "answer_demos"),
    ("filtered_questions", "deduplicated_questions", "grounded_answers", "sft_candidates"),
)
AUGCON_KEYS = (
    "chunks",
    "nodes_by_stop_reason",
    "heldout_accuracy",
    "demos_by_language",
    "quota_met_rate",
)


def _run_augcon(defs: Any, instance: Any) -> list[Any]:
    """AugCon over the demo corpus (handbook pages copied under <CONDOR_HOME>/corpus unless
    CONDOR_CORPUS_DIR names the user's own)."""
    from condor_dagster.methods.augcon.demo import install_corpus, run_augcon_demo
    from condor_dagster.methods.corpus.resource import CorpusResource

    corpus = CorpusResource()
    if not os.environ.get("CONDOR_CORPUS_DIR"):
        pages = install_corpus(corpus.root())
        print(f"[demo] AugCon corpus: {len(pages)} handbook pages in {corpus.root()}")
    print(
        "[demo] AugCon: corpus/documents -> chunks -> context_tree; scorer_triplets -> "
        "query_scorer, answer_demos; filtered_questions -> deduplicated_questions -> "
        "grounded_answers -> sft_candidates, every corpus shard in one run each",
        flush=True,
    )
    return run_augcon_demo(defs, instance, corpus)


def _print_model_note(model: str) -> None:
    from condor_dagster.resources.model_store import PROVENANCE_FILE

    record = Path(model) / PROVENANCE_FILE
    name = json.loads(record.read_text()).get("name") if record.is_file() else None
    if name == "tiny" or (Path(model) / "condor_tiny_model.json").is_file():
        print(
            "\n[demo] The text comes from a random-weight model: noise that proves the machinery."
        )
    elif name == "smollm2-135m-instruct":
        print(
            "\n[demo] The text comes from SmolLM2-135M-Instruct: real language, weak content; "
            "the quality gates' drops above show what a small model gets wrong. Point "
            "CONDOR_MODEL at a 7B+ instruct model on a GPU for data worth training on."
        )


def _print_trace_example() -> None:
    from condor_dagster.core.storage import store_from_env
    from condor_dagster.core.trace import format_trace, trace
    from condor_dagster.methods import traces

    del traces  # imported for its registrations
    samples = store_from_env().read(["sft_dataset"], columns=["id", "kept"])
    if samples.height == 0:
        return
    kept = samples.filter(samples["kept"])  # a sample that made it into the exports
    sample_id = (kept if kept.height else samples)["id"][0]
    print(f"\n[demo] where a sample came from: .venv/bin/condor trace {sample_id}  (--json too)")
    lines = format_trace(trace(sample_id), max_chars=80).splitlines()
    print("\n".join(f"  {line}" for line in lines[:14]))
    if len(lines) > 14:
        print(f"  ... ({len(lines) - 14} more lines)")


# ---- condor models ------------------------------------------------------------------------------
def _cmd_models(args: argparse.Namespace) -> int:
    from condor_dagster.resources.model_store import (
        KNOWN_MODELS,
        ModelInstallError,
        install_model,
        model_path,
        provenance,
    )

    if args.action == "install":
        names = args.names or []
        if not names:
            print(
                "condor models install: name a model: " + ", ".join(KNOWN_MODELS), file=sys.stderr
            )
            return 2
        for name in names:
            began = time.perf_counter()
            try:
                path = install_model(name, force=args.force)
            except ModelInstallError as exc:
                print(f"condor models install: {exc}", file=sys.stderr)
                return 1
            print(f"{name}: {path} ({time.perf_counter() - began:.1f}s)")
        return 0
    for name, known in KNOWN_MODELS.items():
        record = provenance(name)
        state = f"installed at {model_path(name)}" if record else "not installed"
        print(f"{name:<24} {known.description}\n{'':<24} {state}")
        if record and record.get("source_package"):
            print(
                f"{'':<24} from {record['source_package']} {record['source_version']}, "
                f"sha256 {record.get('gguf_sha256', '?')[:16]}..., {record['license']}"
            )
    print("\nCONDOR_MODEL takes a name above, a model directory or a Hugging Face id.")
    return 0


def _add_models_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="list the known models, or install them offline")
    models.add_argument("action", nargs="?", choices=["list", "install"], default="list")
    models.add_argument("names", nargs="*", help="models to install (install only)")
    models.add_argument("--force", action="store_true", help="rebuild even if installed")
    models.set_defaults(func=_cmd_models)


# ---- condor trace -------------------------------------------------------------------------------
def _cmd_trace(args: argparse.Namespace) -> int:
    import json

    from condor_dagster.core.trace import TraceError, format_trace, trace, trace_to_dict
    from condor_dagster.methods import traces

    del traces  # imported for its registrations

    try:
        found = trace(args.id, args.data_dir)
    except TraceError as exc:
        print(f"condor trace: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(trace_to_dict(found), ensure_ascii=False, indent=2))
    else:
        print(format_trace(found, max_chars=None if args.full else 400))
    return 0


def _add_trace_parser(sub: Any) -> None:
    trace = sub.add_parser(
        "trace", help="walk a sample, answer, question or tag id back to its tag path"
    )
    trace.add_argument("id", help="r-..., a-..., q-... row id or a tag id (healthcare.3d804971)")
    trace.add_argument("--json", action="store_true", help="print the trace as JSON")
    trace.add_argument(
        "--data-dir",
        default=None,
        help="data directory (its assets/ folder) or the assets folder itself "
        "(default: CONDOR_ASSETS_DIR, else <CONDOR_DATA_DIR>/assets)",
    )
    trace.add_argument("--full", action="store_true", help="show texts whole, not cut")
    trace.set_defaults(func=_cmd_trace)


# ---- end condor trace ---------------------------------------------------------------------------


# ---- condor serve -------------------------------------------------------------------------------
def _cmd_serve(args: argparse.Namespace) -> int:
    from condor_dagster.serving.serve import serve

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if os.environ.get("CONDOR_LLM", "engine") == "engine":
        ensure_demo_model()  # the run workers load it; build the tiny one when none is set
    return serve(
        host=args.host,
        port=args.port,
        gpu_slots=args.gpu_slots,
        pg_data_dir=Path(args.pg_data_dir) if args.pg_data_dir else None,
    )


def _add_serve_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="Dagster UI + daemon over PostgreSQL (deploy/dagster.yaml); Ctrl-C stops all",
    )
    serve.add_argument("--host", default="127.0.0.1", help="webserver address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=3000, help="webserver port (default 3000)")
    serve.add_argument(
        "--gpu-slots",
        type=int,
        default=1,
        help="limit of the gpu concurrency pool: engine-using runs at once (default 1)",
    )
    serve.add_argument(
        "--pg-data-dir",
        default=None,
        help="data directory of the PostgreSQL it starts when DAGSTER_PG_HOST is unset "
        "(default <CONDOR_HOME>/serve/postgres; as root it must be reachable by the postgres user)",
    )
    serve.set_defaults(func=_cmd_serve)


# ---- end condor serve ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="condor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("tiny-model", help="build the offline random-weight test model")
    tiny.add_argument("dir", help="output directory (replaced if it exists)")
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    tiny.set_defaults(func=_cmd_tiny_model)

    demo = sub.add_parser(
        "demo", help="install the demo model (SmolLM2) if needed and run the pipeline"
    )
    demo.add_argument("--roots", type=int, default=2, help="seed roots to expand (default 2)")
    demo.add_argument("--fan-out", type=int, default=2, help="children per node (default 2)")
    demo.add_argument("--max-tags", type=int, default=8, help="tag partitions to run (default 8)")
    demo.add_argument(
        "--methods",
        type=lambda v: [m.strip() for m in v.split(",") if m.strip()],
        default=["condor", "augcon"],
        help="methods to run, comma-separated (default condor,augcon; Condor always runs)",
    )
    demo.set_defaults(func=_cmd_demo)
    _add_models_parser(sub)
    _add_trace_parser(sub)
    _add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Dagster warns on every import that backfill_policy and pools are beta; the CLI's users
    # chose them knowingly, so keep the terminal for the pipeline's own output.
    warnings.filterwarnings("ignore", message=r".*(is currently in beta|is currently in preview)")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
