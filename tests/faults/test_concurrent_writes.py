"""Two runs writing the same partition at once leave exactly one complete file, equal to one
run's output, and no stray temporary files; readers never see a partial file, also while a
writer is killed mid-write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow.parquet as pq
import pytest

from .conftest import (
    TASKS_X_DIFFICULTIES,
    Deployment,
    check_parquet_files,
    log_tail,
    read_partition,
    temporary_files,
)

SAMPLES = 2


def test_two_runs_writing_one_partition_leave_one_complete_file(
    deployment: Deployment, tmp_path: Path
) -> None:
    (key,) = deployment.grow_tree(["Pets"])
    config = {"ops": {"condor__raw_questions": {"config": {"samples_per_task": SAMPLES}}}}
    # Both scripted LLMs wait for each other after generating, so both runs reach the IO
    # manager together; each writes text naming its writer.
    rendezvous = tmp_path / "rendezvous"
    workers = {
        writer: deployment.start_worker(
            [key],
            config,
            name=f"writer-{writer}",
            scripted=True,
            env={"FAULT_WRITER": writer, "FAULT_RENDEZVOUS_DIR": str(rendezvous)},
            tags={"fault/writer": writer},
        )
        for writer in ("a", "b")
    }
    for worker in workers.values():
        assert worker.wait(timeout_s=240) == 0, worker.tail()

    runs = {run.tags["fault/writer"]: run for run in deployment.runs()}
    assert sorted(runs) == ["a", "b"]
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs.values())
    for run in runs.values():  # both runs materialized the partition
        (event,) = deployment.materializations(run.run_id, "raw_questions")
        assert event.partition == key

    assert check_parquet_files(deployment.data) == {
        "assets/condor/knowledge_tree.parquet": 1,
        f"assets/condor/raw_questions/{key}.parquet": TASKS_X_DIFFICULTIES * SAMPLES,
    }
    assert temporary_files(deployment.data) == []
    stored = read_partition(deployment, "raw_questions", key)
    lineage = stored["lineage"].struct
    (run_id,) = lineage.field("run_id").unique().to_list()  # one run's rows, never a mix
    (writer,) = [w for w, run in runs.items() if run.run_id == run_id]
    assert lineage.field("model").unique().to_list() == [f"scripted-{writer}"]
    usable = stored.filter(pl.col("drop_reason").is_null())["text"]
    assert usable.len() == stored.height
    assert usable.str.starts_with(f"Writer {writer}: ").all()


WRITER = str(Path(__file__).with_name("partition_writer.py"))
ROWS = 30_000


def start_writer(base: Path, writer: int, rounds: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, WRITER, str(base), str(writer), str(ROWS), str(rounds)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def check_complete(path: Path) -> int:
    """The file reads whole and holds exactly one writer's frame; returns the writer."""
    table = pq.read_table(path)
    assert table.num_rows == ROWS
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    (writer,) = frame["writer"].unique().to_list()
    assert frame["i"].equals(pl.Series("i", range(ROWS)), check_dtypes=False)
    return int(writer)


def test_concurrent_and_killed_writers_never_expose_a_partial_file(tmp_path: Path) -> None:
    base = tmp_path / "assets"
    target = base / "raw_questions" / "t1.parquet"
    logs = [tmp_path / f"writer-{w}.log" for w in range(2)]
    # Writer 0 writes six times; writer 1 writes beside it until it is killed with SIGKILL.
    writers = [start_writer(base, w, rounds=6 if w == 0 else 1000, log=logs[w]) for w in range(2)]
    finishing, killed = writers[0], writers[1]
    seen: set[int] = set()
    reads = 0
    deadline = time.monotonic() + 240
    try:
        # Read while they write: every read sees one whole file, never a torn or mixed one.
        while finishing.poll() is None or killed.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail("writers did not finish in 240s\n" + "\n".join(map(log_tail, logs)))
            if killed.poll() is None and logs[1].read_text().count("writing") >= 3:
                os.kill(killed.pid, signal.SIGKILL)  # its third write is under way
                killed.wait(timeout=60)
            if target.exists():
                seen.add(check_complete(target))
                reads += 1
            time.sleep(0.02)
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait(timeout=60)

    assert finishing.returncode == 0, log_tail(logs[0])
    assert killed.returncode == -signal.SIGKILL, log_tail(logs[1])
    assert reads > 0 and seen <= {0, 1}
    assert check_complete(target) in {0, 1}
    visible = sorted(p.name for p in target.parent.iterdir() if not p.name.startswith("."))
    assert visible == ["t1.parquet"]
    # A write cut off by the kill can leave only a hidden temporary sibling, which nothing reads.
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".")]
    assert all(name.startswith(".t1.parquet.") and name.endswith(".tmp") for name in leftovers)
