"""`condor serve`: the Dagster UI (webserver) and daemon over PostgreSQL on one machine.

Layout under $CONDOR_HOME/serve/: dagster_home/ (deploy/dagster.yaml copied in), postgres/
(the cluster `condor serve` starts when DAGSTER_PG_HOST is unset), logs/ (webserver, daemon,
postgres). The demo's SQLite instance ($CONDOR_HOME/dagster_home) is never touched.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from condor_dagster.core.paths import condor_home
from condor_dagster.serving.postgres import LocalPostgres
from condor_dagster.serving.stack import PG_ENV_VARS, ServeStack
from condor_dagster.stages.partitions import GPU_POOL

STOP_CANCEL_TIMEOUT_S = 60.0


def serve_dir() -> Path:
    return condor_home() / "serve"


def external_postgres_env(environ: Mapping[str, str]) -> dict[str, str] | None:
    """DAGSTER_PG_* of a server the user runs (DAGSTER_PG_HOST set), with defaults for the
    rest; None when DAGSTER_PG_HOST is unset."""
    if not environ.get("DAGSTER_PG_HOST"):
        return None
    defaults = {"DAGSTER_PG_PORT": "5432", "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": "dagster"}
    env = {k: environ.get(k, defaults.get(k, "")) for k in PG_ENV_VARS}
    if not env["DAGSTER_PG_USER"]:
        raise ValueError(
            "DAGSTER_PG_HOST is set but DAGSTER_PG_USER is not; set DAGSTER_PG_USER (and "
            "DAGSTER_PG_PASSWORD, DAGSTER_PG_PORT, DAGSTER_PG_DB as needed), or unset "
            "DAGSTER_PG_HOST to let condor serve start its own PostgreSQL"
        )
    if not env["DAGSTER_PG_PORT"].isdigit():
        raise ValueError(f"DAGSTER_PG_PORT must be a port number, got {env['DAGSTER_PG_PORT']!r}")
    return env


def cancel_runs_in_progress(instance: Any, timeout_s: float = STOP_CANCEL_TIMEOUT_S) -> list[str]:
    """Ask every starting or started run to stop (as the UI's Terminate does), wait for them,
    and mark those still going as cancelled: their workers go down with the daemon, and a run
    left "started" would hold the gpu pool for ever. Queued runs stay queued for next time."""
    import dagster as dg
    from dagster._core.storage.dagster_run import RunsFilter

    active = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    runs = [r.dagster_run for r in instance.get_run_records(RunsFilter(statuses=active))]
    for run in runs:
        try:
            instance.run_launcher.terminate(run.run_id)
        except Exception as err:  # its code server may be gone: the run is marked below
            print(f"[serve] could not terminate run {run.run_id}: {err}", file=sys.stderr)
            instance.report_engine_event(f"condor serve could not terminate the run: {err}", run)
    deadline = time.monotonic() + timeout_s
    pending = [run.run_id for run in runs]
    while pending and time.monotonic() < deadline:
        time.sleep(1)
        pending = [i for i in pending if not instance.get_run_by_id(i).is_finished]
    for run_id in pending:
        instance.report_run_canceled(
            instance.get_run_by_id(run_id), "condor serve stopped while the run was in progress"
        )
    return [run.run_id for run in runs]


def fail_orphaned_runs(instance: Any) -> list[str]:
    """Runs a previous `condor serve` left in progress (it was killed before it could cancel
    them). Only for the private PostgreSQL: nothing else launches runs on it, so no worker of
    theirs can still be alive."""
    import dagster as dg
    from dagster._core.storage.dagster_run import RunsFilter

    statuses = [
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    orphans = [r.dagster_run for r in instance.get_run_records(RunsFilter(statuses=statuses))]
    for run in orphans:
        instance.report_run_failed(
            run, "its condor serve stopped without shutting the run down (killed or crashed)"
        )
    return [run.run_id for run in orphans]


class _Stop(Exception):
    """SIGTERM or SIGINT: shut the stack down."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def serve(
    *,
    host: str,
    port: int,
    gpu_slots: int,
    home: Path | None = None,
    pg_data_dir: Path | None = None,
) -> int:
    """Start PostgreSQL (unless DAGSTER_PG_HOST is set), the daemon and the webserver; run
    until Ctrl-C or SIGTERM, then stop them all, PostgreSQL last."""
    if gpu_slots < 1:
        print(f"[serve] --gpu-slots must be at least 1, got {gpu_slots}", file=sys.stderr)
        return 2
    home = home or serve_dir()
    logs = home / "logs"
    if host not in LOOPBACK:
        print(
            f"[serve] warning: the Dagster UI on {host} has no login; anyone who can reach "
            "the port can launch and delete runs",
            file=sys.stderr,
        )
    # Handlers first: a signal during start-up still shuts down what was started.
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    postgres: LocalPostgres | None = None
    stack: ServeStack | None = None
    started = False
    try:
        pg_env = external_postgres_env(os.environ)
        if pg_env is None:
            postgres = LocalPostgres(
                pg_data_dir or home / "postgres", log_path=logs / "postgres.log"
            )
            print(f"[serve] starting PostgreSQL ({postgres.bin_dir}) in {postgres.data_dir} ...")
            postgres.start()
            pg_env = postgres.env()
            print(f"[serve] PostgreSQL on {postgres.host}:{postgres.port}, database dagster")
        else:
            print(f"[serve] PostgreSQL at {pg_env['DAGSTER_PG_HOST']}:{pg_env['DAGSTER_PG_PORT']}")
        stack = ServeStack(
            home / "dagster_home",
            env=pg_env,
            log_dir=logs,
            host=host,
            port=port,
            pool_limits={GPU_POOL: gpu_slots},
        )
        stack.prepare()
        if postgres is not None:
            with stack.instance() as instance:
                orphans = fail_orphaned_runs(instance)
            if orphans:
                print(f"[serve] marked {len(orphans)} runs left in progress last time as failed")
        print(f"[serve] starting dagster-daemon and dagster-webserver (logs in {logs}) ...")
        stack.launch()
        started = True
        print(
            f"[serve] Dagster UI: {stack.url}   DAGSTER_HOME={stack.dagster_home}\n"
            f"[serve] gpu pool limit {gpu_slots}; LLM: {os.environ.get('CONDOR_LLM', 'engine')}, "
            f"model {os.environ.get('CONDOR_MODEL')}\n"
            "[serve] Ctrl-C (or SIGTERM) stops the webserver, the daemon and PostgreSQL",
            flush=True,
        )
        while True:
            stack.check_alive()
            time.sleep(1)
    except _Stop as stop:
        print(f"\n[serve] {stop}: shutting down ...", flush=True)
        return 0
    except (RuntimeError, ValueError, OSError) as err:
        # Start-up problems (no PostgreSQL, bad DAGSTER_PG_*, port taken, a process died)
        # carry their fix in the message; the stack is stopped below either way.
        print(f"[serve] {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        # Ignore further Ctrl-C while shutting down: a half-stopped stack is worse.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if stack is not None and started:
                with stack.instance() as instance:
                    cancelled = cancel_runs_in_progress(instance)
                if cancelled:
                    print(f"[serve] cancelled {len(cancelled)} runs in progress")
        finally:
            if stack is not None:
                stack.stop()
            if postgres is not None:
                postgres.stop()
            print("[serve] stopped", flush=True)
