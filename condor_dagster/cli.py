"""The `condor` command: tiny-model, demo."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from condor_dagster.core.paths import condor_home, data_dir, models_dir


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from condor_dagster.core.tiny_model import build_tiny_model

    began = time.perf_counter()
    out = build_tiny_model(args.dir, seed=args.seed)
    print(f"tiny random-weight Llama model written to {out} in {time.perf_counter() - began:.1f}s")
    print("its text is noise: it proves the machinery, not the data")
    return 0


def ensure_demo_model() -> str:
    """CONDOR_MODEL if set, else the tiny model under <CONDOR_HOME>/models/tiny (built once)."""
    model = os.environ.get("CONDOR_MODEL")
    if model:
        return model
    tiny = models_dir() / "tiny"
    if not (tiny / "config.json").is_file():
        from condor_dagster.core.tiny_model import build_tiny_model

        print(f"[demo] building the tiny offline model in {tiny} ...", flush=True)
        build_tiny_model(tiny)
    os.environ["CONDOR_MODEL"] = str(tiny)
    return str(tiny)


def _dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or condor_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _cmd_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = ensure_demo_model()
    home = _dagster_home()
    print(f"[demo] model: {model}")
    print(f"[demo] data dir: {data_dir()}   DAGSTER_HOME: {home}", flush=True)

    import dagster as dg

    from condor_dagster.definitions import defs

    job = defs.resolve_job_def("engine_smoke_job")
    run_config = {"ops": {"engine_smoke_test": {"config": {"requests": args.requests}}}}
    began = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(run_config=run_config, instance=instance)
    if not result.success:
        print("[demo] the run failed; see the log above", file=sys.stderr)
        return 1
    materialization = result.asset_materializations_for_node("engine_smoke_test")[0]
    meta = {k: v.value for k, v in materialization.metadata.items()}
    print(f"\n[demo] run {result.run_id} succeeded in {time.perf_counter() - began:.1f}s")
    for key in (
        "requests",
        "cache_hits",
        "cache_misses",
        "completion_tokens",
        "tokens_per_second",
        "parse_failure_rate",
        "truncation_rate",
        "engine",
    ):
        print(f"  {key:>20}: {meta.get(key)}")
    print(
        "\nOpen the Dagster UI on the same instance to see the run and its metadata:\n"
        f"  DAGSTER_HOME={home} CONDOR_MODEL={model} .venv/bin/dagster dev -w workspace.yaml\n"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="condor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("tiny-model", help="build the offline random-weight test model")
    tiny.add_argument("dir", help="output directory (replaced if it exists)")
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    tiny.set_defaults(func=_cmd_tiny_model)

    demo = sub.add_parser("demo", help="build the tiny model if needed and run the main job")
    demo.add_argument("--requests", type=int, default=32, help="smoke batch size (default 32)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
