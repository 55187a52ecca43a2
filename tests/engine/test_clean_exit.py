"""A process that used the in-process engine exits as soon as its work is done.

vLLM's engine core can be a child process; a process that keeps an engine alive to the end used
to hang in multiprocessing's exit handler, joining that child. Engines are shut down at exit
(an atexit hook registered with the first engine), in both CPU modes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Executes a job in process through the project's definitions, as a user's script would.
SCRIPT = """
from condor_dagster.definitions import defs

if __name__ == "__main__":
    job = defs.resolve_job_def("engine_smoke_job")
    config = {"ops": {"engine_smoke_test": {"config": {"requests": 4, "max_tokens": 16}}}}
    result = job.execute_in_process(run_config=config)
    print("LAST LINE", result.success, flush=True)
"""

# Generous: a clean exit takes a few seconds; the hang it guards against never ends.
EXIT_WITHIN_S = 30


def run_and_time_exit(
    args: list[str], env: dict[str, str], *, timeout_s: float, stderr_to_stdout: bool = False
) -> tuple[str, float]:
    """(stdout, seconds from the last line printed to the process's exit)."""
    child = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if stderr_to_stdout else subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    lines: list[str] = []
    last_at = time.monotonic()
    deadline = last_at + timeout_s
    for line in child.stdout:
        lines.append(line)
        last_at = time.monotonic()
        if last_at > deadline:
            break
    try:
        child.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise AssertionError(
            "process still running after its output ended: " + "".join(lines[-5:])
        ) from None
    return "".join(lines), time.monotonic() - last_at


@pytest.mark.engine
@pytest.mark.parametrize("inline", ["1", "0"], ids=["inline-engine", "engine-core-process"])
def test_a_script_running_jobs_in_process_exits_promptly(tiny_model: str, inline: str) -> None:
    env = {
        **os.environ,
        "CONDOR_MODEL": tiny_model,
        "CONDOR_LLM": "engine",
        "CONDOR_MAX_MODEL_LEN": "1024",
        "CONDOR_CPU_INLINE_ENGINE": inline,
        "DAGSTER_HOME": "",
    }
    env.pop("DAGSTER_HOME")
    out, exit_s = run_and_time_exit([sys.executable, "-c", SCRIPT], env, timeout_s=400)
    assert "LAST LINE True" in out
    assert exit_s < EXIT_WITHIN_S, f"exited {exit_s:.1f}s after its last line"


@pytest.mark.engine
def test_a_dagster_cli_run_exits_promptly(tiny_model: str, tmp_path) -> None:
    """`dagster job execute` runs a job the way a run worker does (the run in this process,
    the engine loaded by its first LLM step) and returns when the run ends."""
    config = tmp_path / "run.yaml"
    config.write_text(
        "ops:\n  engine_smoke_test:\n    config:\n      requests: 4\n      max_tokens: 16\n"
    )
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "CONDOR_MODEL": tiny_model,
        "CONDOR_LLM": "engine",
        "CONDOR_MAX_MODEL_LEN": "1024",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    dagster = str(Path(sys.executable).with_name("dagster"))
    args = [dagster, "job", "execute", "-m", "condor_dagster.definitions"]
    args += ["-j", "engine_smoke_job", "-c", str(config)]
    out, exit_s = run_and_time_exit(args, env, timeout_s=400, stderr_to_stdout=True)
    assert "RUN_SUCCESS" in out, out[-2000:]
    assert exit_s < EXIT_WITHIN_S, f"exited {exit_s:.1f}s after its last line"
