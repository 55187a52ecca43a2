"""A PostgreSQL server from Debian's packages on 127.0.0.1, for `condor serve` and the tests.

`LocalPostgres(data_dir).start()` creates the cluster on first use (initdb, password auth,
one database), starts `postgres` on a free loopback port, waits until it accepts connections
and returns; `stop()` shuts it down (fast shutdown: clients are disconnected, data is kept).
`env()` gives the DAGSTER_PG_* variables deploy/dagster.yaml reads.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from condor_dagster.resources.vllm_server_process import free_port

POSTGRES_BIN_ROOT = Path("/usr/lib/postgresql")
PASSWORD_FILE = "condor-password"  # inside the data directory, next to PG_VERSION
SYSTEM_USER = "postgres"


def postgres_bin_dir(root: Path = POSTGRES_BIN_ROOT) -> Path:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb and postgres."""
    candidates = [
        d / "bin"
        for d in root.glob("*")
        if (d / "bin" / "initdb").is_file() and (d / "bin" / "postgres").is_file()
    ]
    if not candidates:
        raise FileNotFoundError(
            f"no PostgreSQL server under {root}/<version>/bin; install Debian's package with "
            "`make system-deps` (or `apt-get install postgresql`), or point condor serve at a "
            "server you run with DAGSTER_PG_HOST, DAGSTER_PG_PORT, DAGSTER_PG_USER, "
            "DAGSTER_PG_PASSWORD and DAGSTER_PG_DB"
        )
    return max(candidates, key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()])


def _run_as() -> pwd.struct_passwd | None:
    """initdb and postgres refuse to run as root: as root they run as the `postgres` system
    user (Debian's package creates it), which must own the data directory."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError as err:
        raise RuntimeError(
            f"running as root, but there is no {SYSTEM_USER!r} system user to run PostgreSQL "
            "as (initdb and postgres refuse root); install Debian's postgresql package or run "
            "as an ordinary user"
        ) from err


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """The postgres user must be able to enter every parent of the data directory."""
    for parent in [*reversed(path.parents)]:
        mode = parent.stat()
        if mode.st_uid == user.pw_uid or mode.st_mode & stat.S_IXOTH:
            continue
        if mode.st_gid == user.pw_gid and mode.st_mode & stat.S_IXGRP:
            continue
        raise RuntimeError(
            f"PostgreSQL runs as the {user.pw_name!r} user when condor runs as root, and it "
            f"cannot enter {parent} (mode {stat.filemode(mode.st_mode)}) on the way to its data "
            f"directory {path}; choose a data directory it can reach (e.g. under /tmp or /var) "
            f"or allow it in: chmod o+x {parent}"
        )


class LocalPostgres:
    """One PostgreSQL cluster in `data_dir`, served on `host`:`port` (free port if None)."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str = "condor",
        db_name: str = "dagster",
        log_path: str | Path | None = None,
        durable: bool = True,
        bin_dir: str | Path | None = None,
    ):
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.host = host
        self.port = port or free_port(host)
        self.user = user
        self.db_name = db_name
        self.log_path = Path(log_path) if log_path else self.data_dir.with_name("postgres.log")
        # durable=False turns fsync off: for throwaway test clusters, never for real data.
        self.durable = durable
        self.bin_dir = Path(bin_dir) if bin_dir else postgres_bin_dir()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[Any] | None = None
        self._as = _run_as()

    # ---- settings -------------------------------------------------------------------------------
    @property
    def password(self) -> str:
        return (self.data_dir / PASSWORD_FILE).read_text().strip()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.db_name}"

    def env(self) -> dict[str, str]:
        """The connection settings deploy/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }

    # ---- lifecycle ------------------------------------------------------------------------------
    def _popen_kwargs(self) -> dict[str, Any]:
        if self._as is None:
            return {}
        return {
            "user": self._as.pw_uid,
            "group": self._as.pw_gid,
            "extra_groups": [],
            "env": {**os.environ, "HOME": self._as.pw_dir, "USER": self._as.pw_name},
        }

    def _initdb(self) -> None:
        """A new cluster: password (scram) auth for TCP, the password kept in the data dir."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise RuntimeError(
                f"{self.data_dir} is not empty and holds no PostgreSQL cluster (no PG_VERSION); "
                "point the data directory at an empty or missing folder"
            )
        if self._as is not None:
            _check_reachable(self.data_dir, self._as)
            shutil.chown(self.data_dir, self._as.pw_uid, self._as.pw_gid)
        self.data_dir.chmod(0o700)
        # initdb reads the superuser's password from a file it can open as its own user (a
        # pipe from root is not one), and refuses a non-empty data directory: so the file
        # lives beside the data directory until initdb is done, then moves inside it.
        password = secrets.token_urlsafe(24)
        secret = self.data_dir.with_name(f".{self.data_dir.name}.{PASSWORD_FILE}")
        secret.touch(mode=0o600)
        secret.write_text(password + "\n")
        if self._as is not None:
            shutil.chown(secret, self._as.pw_uid, self._as.pw_gid)
        try:
            done = subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    f"--pwfile={secret}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                capture_output=True,
                check=False,
                **self._popen_kwargs(),
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"initdb failed (exit {done.returncode}) for {self.data_dir}:\n"
                    f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
                )
            secret.replace(self.data_dir / PASSWORD_FILE)
        finally:
            secret.unlink(missing_ok=True)

    def start(self, timeout_s: float = 60.0) -> LocalPostgres:
        """Create the cluster if needed, start the server, wait for it, create the database."""
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()
        elif self._as is not None:
            _check_reachable(self.data_dir, self._as)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        args = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"port={self.port}",
            # TCP only: no socket in /var/run/postgresql, which may be missing or not ours.
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                args += ["-c", setting]
        self.process = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._popen_kwargs(),
        )
        self._wait_ready(timeout_s)
        self._ensure_database()
        return self

    def _connect(self, db_name: str) -> Any:
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=db_name,
            connect_timeout=3,
        )

    def _wait_ready(self, timeout_s: float) -> None:
        import psycopg2

        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise RuntimeError(
                    f"postgres exited with code {code} during start-up; log {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            try:
                self._connect("postgres").close()
                return
            except psycopg2.OperationalError as err:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"postgres on {self.host}:{self.port} not accepting connections after "
                        f"{timeout_s:.0f}s ({err}); log {self.log_path}:\n{self.log_tail()}"
                    ) from err
            time.sleep(0.2)

    def _ensure_database(self) -> None:
        conn = self._connect("postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.db_name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            conn.close()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: disconnect clients, checkpoint), SIGKILL if it lingers."""
        proc = self.process
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            self.process = None
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
