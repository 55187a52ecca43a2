"""Session fixtures of the serving tests: one PostgreSQL, one webserver + daemon stack.

The stack runs deploy/dagster.yaml (the instance config of `condor serve`) in a temporary
DAGSTER_HOME, with the LLM resource in server mode against the session's real `vllm serve`,
so runs do not each load an engine. Logs (postgres, daemon, webserver) stay under the
session's tmp dir; waits print their tails when they time out.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from condor_dagster.resources.vllm_server_process import free_port
from condor_dagster.serving.postgres import LocalPostgres
from condor_dagster.serving.stack import ServeStack

from .ui import DagsterUI

FAST_DAEMON = Path(__file__).with_name("fast_daemon.py")


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (fsync off)."""
    logs = tmp_path_factory.mktemp("serve_logs")
    # Directly under /tmp, not pytest's private tmp dir: as root, PostgreSQL runs as the
    # postgres user, who must be able to reach its data directory.
    data = Path(tempfile.mkdtemp(prefix="condor-test-pg-"))
    server = LocalPostgres(data, log_path=logs / "postgres.log", durable=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def condor_stack(
    postgres: LocalPostgres,
    vllm_server: object,
    tiny_model: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DagsterUI]:
    """dagster-webserver + dagster-daemon on PostgreSQL, runs against the vLLM server; one
    tag partition per backfill run, so a backfill of several tags is several runs that
    compete for the gpu pool."""
    root = tmp_path_factory.mktemp("serve")
    env = {
        **postgres.env(),
        "CONDOR_HOME": str(root / "home"),
        "CONDOR_DATA_DIR": str(root / "data"),
        "CONDOR_LLM": "server",
        "CONDOR_LLM_BASE_URL": vllm_server.base_url,  # type: ignore[attr-defined]
        "CONDOR_MODEL": tiny_model,
        "CONDOR_MAX_PARTITIONS_PER_RUN": "1",
        # The sensor only adds partitions here; the tests launch the backfills.
        "CONDOR_SENSOR_REQUESTS_RUNS": "0",
        "CONDOR_TAGS_SENSOR_INTERVAL_S": "3",
    }
    stack = ServeStack(
        root / "dagster_home",
        env=env,
        log_dir=root / "logs",
        port=free_port(),
        daemon_command=[sys.executable, str(FAST_DAEMON)],
    )
    try:
        stack.start(timeout_s=240)
        yield DagsterUI(stack)
    finally:
        stack.stop()
