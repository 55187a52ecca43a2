"""demo_wall_seconds: `condor demo` end to end after set-up, from a fresh data directory.

After set-up means the venv and the installed model are there (a user's second `make demo`
on a new data directory); everything else starts from nothing: an empty CONDOR_DATA_DIR and
DAGSTER_HOME, so no response-cache hit, and a fresh Python process, so imports, the engine start
and every stage are inside the figure. The time to the process's exit is measured, so a hang
at exit would show here too."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.core import Context, Result


def run(ctx: Context) -> dict[str, Result]:
    """One repetition in a full run as well: a demo takes minutes, and its parts are figures
    of their own elsewhere."""
    model = ctx.smollm2_dir()
    home = ctx.workdir / "demo"
    env = {
        **os.environ,
        "CONDOR_HOME": str(home),
        "CONDOR_DATA_DIR": str(home / "data"),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "CONDOR_MODEL": str(model),
    }
    log = ctx.workdir / "demo.log"
    ctx.log(f"demo: condor demo on a fresh data directory (log {log})")
    condor = Path(sys.executable).with_name("condor")
    args = [str(condor), "demo", *(["--max-tags", "1", "--roots", "1"] if ctx.quick else [])]
    began = time.perf_counter()
    with log.open("w") as fh:
        subprocess.run(args, env=env, stdout=fh, stderr=subprocess.STDOUT, check=True, timeout=1800)
    seconds = time.perf_counter() - began
    stages = [
        line.strip()
        for line in log.read_text().splitlines()
        if line.startswith("  ") and ": " in line
    ][:12]
    return {
        "demo_wall_seconds": Result(
            [seconds],
            note="condor demo (default workload) on SmolLM2-135M-Instruct, to process exit",
            detail={"stage_lines": stages},
        )
    }
