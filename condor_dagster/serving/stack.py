"""dagster-webserver and dagster-daemon over one instance config (deploy/dagster.yaml).

`ServeStack` copies the config into its DAGSTER_HOME, opens the instance once (creating the
schema before two processes race to, and setting the pool limits), then runs the daemon and
the webserver as child processes with logs under `log_dir`. Both load the code location from
the `condor_dagster.definitions` module; the daemon's code server launches the run workers,
which inherit the environment given here (CONDOR_*, DAGSTER_PG_*).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from condor_dagster.core.environment import environ
from condor_dagster.stages.partitions import GPU_POOL

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTANCE_CONFIG = REPO_ROOT / "deploy" / "dagster.yaml"
CODE_MODULE = "condor_dagster.definitions"
PG_ENV_VARS = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)
DAEMON_COMMAND = (sys.executable, "-m", "dagster._daemon")
WEBSERVER_COMMAND = (sys.executable, "-m", "dagster_webserver")

LOCATION_QUERY = """
query { workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


class GraphQLError(RuntimeError):
    """The webserver answered a GraphQL request with errors."""


def prepare_dagster_home(home: str | Path, config: str | Path = INSTANCE_CONFIG) -> Path:
    """DAGSTER_HOME with the committed instance config; rewritten on every start so the repo
    file stays the one source of the settings."""
    home = Path(home).expanduser().absolute()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, home / "dagster.yaml")
    return home


def init_instance(home: Path, env: Mapping[str, str], pool_limits: Mapping[str, int]) -> None:
    """Open the instance once before the webserver and daemon start (on a new database this
    creates the tables, which two processes starting together would race to do) and set the
    concurrency pool limits (`dagster instance concurrency set gpu 1` does the same)."""
    missing = [k for k in PG_ENV_VARS if k not in env]
    if missing:
        raise ValueError(
            f"the instance config {home / 'dagster.yaml'} reads {', '.join(PG_ENV_VARS)}; "
            f"{', '.join(missing)} not set"
        )
    with open_instance(home, env) as instance:
        for pool, limit in pool_limits.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)


@contextlib.contextmanager
def open_instance(home: Path, env: Mapping[str, str]) -> Iterator[Any]:
    """The DagsterInstance of `home` in this process, its env: values taken from `env`."""
    import dagster as dg

    with environ({**env, "DAGSTER_HOME": str(home)}), dg.DagsterInstance.get() as instance:
        yield instance


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def _terminate_all(procs: Sequence[Any], timeout_s: float) -> None:
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


class _Child:
    """One child process in its own session, its output appended to a log file."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log_path: Path):
        self.name = name
        self.args = list(args)
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[Any] | None = None
        # Sessions of every start: children (code servers, run workers) of a process that was
        # killed keep its session id, so stop() can still find them.
        self.sessions: list[int] = []

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"\n==== {time.strftime('%H:%M:%S')} start {self.name}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self.sessions.append(self.process.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: signal.Signals) -> None:
        """Signal the process alone (its children live on), as a crash would."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            self.process.wait()
            self.process = None

    def terminate(self) -> None:
        """SIGTERM: the daemon and the webserver shut down cleanly on it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float) -> None:
        """terminate(), wait, then end whatever is left of its process tree and of earlier
        sessions."""
        leftovers = []
        if self.process is not None:
            leftovers = _descendants(self.process.pid)
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None
        _terminate_all(leftovers + self._session_members(), timeout_s=10)
        if self._log:
            self._log.close()
            self._log = None

    def _session_members(self) -> list[Any]:
        import psutil

        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if os.getsid(proc.pid) in self.sessions:
                    found.append(proc)
        return found

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class ServeStack:
    """dagster-webserver on host:port and dagster-daemon, over the instance in dagster_home."""

    def __init__(
        self,
        dagster_home: str | Path,
        *,
        env: Mapping[str, str],
        log_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = 3000,
        instance_config: str | Path = INSTANCE_CONFIG,
        pool_limits: Mapping[str, int] | None = None,
        daemon_command: Sequence[str] = DAEMON_COMMAND,
    ):
        self.dagster_home = Path(dagster_home).expanduser().absolute()
        self.instance_config = Path(instance_config)
        self.host = host
        self.port = port
        self.log_dir = Path(log_dir)
        self.pool_limits = dict(pool_limits if pool_limits is not None else {GPU_POOL: 1})
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(self.dagster_home)}
        self.daemon = _Child(
            "dagster-daemon",
            [*daemon_command, "run", "-m", CODE_MODULE],
            self.env,
            self.log_dir / "daemon.log",
        )
        self.webserver = _Child(
            "dagster-webserver",
            [*WEBSERVER_COMMAND, "-h", host, "-p", str(port), "-m", CODE_MODULE],
            self.env,
            self.log_dir / "webserver.log",
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def prepare(self) -> None:
        """DAGSTER_HOME with the instance config; schema and pool limits in the database."""
        prepare_dagster_home(self.dagster_home, self.instance_config)
        init_instance(self.dagster_home, self.env, self.pool_limits)

    def start(self, timeout_s: float = 180.0) -> ServeStack:
        """prepare(), then launch()."""
        self.prepare()
        return self.launch(timeout_s)

    def launch(self, timeout_s: float = 180.0) -> ServeStack:
        """Start the daemon and the webserver; wait until the webserver has the code loaded."""
        try:
            self.daemon.start()
            self.webserver.start()
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Until the webserver answers GraphQL with the code location loaded."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                data = self.graphql(LOCATION_QUERY, timeout_s=10)
                entries = data["workspaceOrError"].get("locationEntries") or []
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [
                        e["locationOrLoadError"].get("message")
                        for e in entries
                        if e["locationOrLoadError"]["__typename"] == "PythonError"
                    ]
                    if errors:
                        raise RuntimeError(f"code location failed to load:\n{errors[0]}")
                    return
                last = f"locations {[(e['name'], e['loadStatus']) for e in entries]}"
            except (httpx.HTTPError, GraphQLError) as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(1)
        raise TimeoutError(
            f"dagster-webserver on {self.url} not ready after {timeout_s:.0f}s ({last})\n"
            f"{self.log_tails()}"
        )

    def check_alive(self) -> None:
        for child in (self.daemon, self.webserver):
            if child.process is not None and child.process.poll() is not None:
                raise RuntimeError(
                    f"{child.name} exited with code {child.process.returncode}; log "
                    f"{child.log_path}:\n{child.log_tail()}"
                )

    def graphql(
        self, query: str, variables: Mapping[str, Any] | None = None, timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """POST /graphql (what the UI does); the `data` of the answer, GraphQLError on errors."""
        answer = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": dict(variables or {})},
            timeout=timeout_s,
        )
        body = answer.json()
        if body.get("errors"):
            raise GraphQLError(f"GraphQL errors: {body['errors']}")
        answer.raise_for_status()
        return dict(body["data"])

    def instance(self) -> contextlib.AbstractContextManager[Any]:
        """This stack's DagsterInstance, opened in the calling process."""
        return open_instance(self.dagster_home, self.env)

    def restart_daemon(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the daemon process alone (SIGKILL: a crash; its code server and the runs
        it launched live on) and start a new one."""
        self.daemon.kill(sig)
        self.daemon.start()

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"---- {c.name} ({c.log_path}), last {lines} lines:\n{c.log_tail(lines)}"
            for c in (self.daemon, self.webserver)
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Both at once (each takes seconds to wind down), then what they started (code
        servers, run workers)."""
        self.webserver.terminate()
        self.daemon.terminate()
        self.webserver.stop(timeout_s)
        self.daemon.stop(timeout_s)

    def __enter__(self) -> ServeStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
