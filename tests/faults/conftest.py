"""A deployment in a temporary folder for the fault tests: a Dagster instance on disk (SQLite
under DAGSTER_HOME), a data directory with the response cache, and run workers started as their
own processes (`dagster job execute`), which a test can kill like any crashed worker.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest

from condor_dagster.methods.condor.assets import knowledge_tree
from condor_dagster.methods.condor.sensors import sync_tags
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.scripted_llm import ScriptedLLMResource
from condor_dagster.resources.vllm_server_process import VLLMServerProcess

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
# Workers for a scripted LLM load this file; server workers load the project's own definitions.
SCRIPTED_DEFS = str(Path(__file__).with_name("scripted_defs.py"))
TASKS_X_DIFFICULTIES = 7 * 3  # rows per raw_questions sample of one tag


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, tail: Callable[[], str]
) -> None:
    """Poll `condition` until true; fail naming `what`, with `tail()` (log tails), on timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tail()}")
        time.sleep(0.05)


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text[-lines:])


@dataclass
class Worker:
    """One `dagster job execute` process (its own session, so the whole tree can be killed)."""

    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        return log_tail(self.log)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"run worker did not finish within {timeout_s:.0f}s\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the worker's process group: no handler, no cleanup, like an OOM kill."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)


@dataclass
class Deployment:
    """DAGSTER_HOME, CONDOR_DATA_DIR and the environment a run worker gets."""

    root: Path
    instance: dg.DagsterInstance
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def assets_dir(self) -> Path:
        return self.data / "assets"

    @property
    def cache_path(self) -> Path:
        return self.data / "llm_cache.sqlite3"

    def cache_count(self) -> int:
        """Completions in the response cache, read as another process would."""
        if not self.cache_path.exists():
            return 0
        with sqlite3.connect(self.cache_path, timeout=30) as conn:
            try:
                return int(conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0])
            except sqlite3.OperationalError:  # the worker has not created the table yet
                return 0

    def use_server(self, server: VLLMServerProcess) -> None:
        """Workers run the project's definitions with the server LLM, as a deployment would."""
        self.env.update(
            CONDOR_LLM="server", CONDOR_LLM_BASE_URL=server.base_url, CONDOR_MODEL=server.model
        )

    def grow_tree(self, roots: list[str] | None = None, taxonomy: str | None = None) -> list[str]:
        """knowledge_tree from a seed taxonomy whose roots are the tags (depth 1: no LLM
        call), then the tags sensor adds them as partitions. Returns the tag partition keys."""
        path = self.root / "taxonomy.yaml"
        path.write_text(taxonomy or "version: 1\nroots: " + json.dumps(roots) + "\n")
        result = dg.materialize(
            [knowledge_tree],
            instance=self.instance,
            resources={
                "llm": ScriptedLLMResource(use_cache=False),
                "io_manager": ParquetIOManager(base_dir=str(self.assets_dir)),
            },
            run_config={
                "ops": {
                    "condor__knowledge_tree": {"config": {"taxonomy_path": str(path), "depth": 1}}
                }
            },
        )
        assert result.success
        sync_tags(self.instance, ParquetIOManager(base_dir=str(self.assets_dir)))
        return list(self.instance.get_dynamic_partitions("tags"))

    def start_worker(
        self,
        keys: list[str],
        run_config: dict[str, Any],
        *,
        name: str,
        scripted: bool = False,
        env: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> Worker:
        """`dagster job execute` of raw_questions over the partition range `keys` (one run)."""
        config = self.root / f"{name}.run_config.json"
        config.write_text(json.dumps(run_config))
        run_tags = {
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
            **(tags or {}),
        }
        where = ["-f", SCRIPTED_DEFS] if scripted else ["-m", "condor_dagster.definitions"]
        command = [
            DAGSTER,
            "job",
            "execute",
            *where,
            "-j",
            "condor_tags_job",
            "-o",
            "condor__raw_questions",
            "--tags",
            json.dumps(run_tags),
            "-c",
            str(config),
        ]
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(process, log)
        self.workers.append(worker)
        return worker

    def runs(self) -> list[dg.DagsterRun]:
        """Runs of condor_tags_job, oldest first."""
        records = self.instance.get_run_records(dg.RunsFilter(job_name="condor_tags_job"))
        return [r.dagster_run for r in sorted(records, key=lambda r: r.create_timestamp)]

    def materializations(self, run_id: str, asset: str) -> list[dg.AssetMaterialization]:
        records = self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        found = [r.asset_materialization for r in records]
        key = dg.AssetKey(["condor", asset])
        return [m for m in found if m is not None and m.asset_key == key]


def is_temporary(path: Path) -> bool:
    """The IO manager's temporary sibling of a file being written (".<name>.<hex>.tmp")."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def temporary_files(data: Path) -> list[str]:
    return sorted(str(p.relative_to(data)) for p in data.rglob("*") if is_temporary(p))


def check_parquet_files(data: Path) -> dict[str, int]:
    """Every visible .parquet under `data` reads back whole (pyarrow checks the footer and
    decodes every page); the only other files are the response cache and hidden temporary
    files of the IO manager. Returns rows per file, relative to `data`."""
    rows: dict[str, int] = {}
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        relative = str(path.relative_to(data))
        if is_temporary(path):
            continue  # a writer's temporary sibling: never read, never a partition
        if path.suffix == ".parquet":
            rows[relative] = pq.read_table(path).num_rows
        else:
            assert path.name.startswith("llm_cache.sqlite3"), f"unexpected file {relative}"
    return rows


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """A fresh instance and data directory; every worker it started is killed at teardown."""
    root = tmp_path / "deploy"
    home = root / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONDOR_", "DAGSTER_")) and key != "VLLM_API_KEY"
    }
    env.update(
        DAGSTER_HOME=str(home),
        CONDOR_HOME=str(root),
        CONDOR_DATA_DIR=str(root / "data"),
        PYTHONUNBUFFERED="1",
    )
    for key in ("DAGSTER_HOME", "CONDOR_HOME", "CONDOR_DATA_DIR"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("CONDOR_ASSETS_DIR", raising=False)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        deployment = Deployment(root=root, instance=instance, env=env)
        try:
            yield deployment
        finally:
            for worker in deployment.workers:
                worker.kill()


def read_partition(deployment: Deployment, asset: str, key: str) -> pl.DataFrame:
    return pl.read_parquet(deployment.assets_dir / "condor" / asset / f"{key}.parquet")
