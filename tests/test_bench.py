"""`python -m bench` end to end on its cheap figures (no vLLM engine): the table is printed,
results.json has every asked figure with median/min/max/target, BENCHMARKS.md keeps its prose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHEAP = [
    "augcon_rouge_filter_seconds_per_100k",
    "backfill_runs_for_1000_tags",
    "dedup_100k_seconds",
    "sgemm_gflops",
]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("bench")
    results, markdown = out / "results.json", out / "BENCHMARKS.md"
    markdown.write_text(
        "# Benchmarks\n\nProse before.\n\n<!-- bench:table:start (kept by hand) -->\nold table\n"
        "<!-- bench:table:end -->\n\nProse between.\n\n<!-- bench:inputs:start -->\n"
        "<!-- bench:inputs:end -->\n\nProse after.\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            ",".join(CHEAP),
            "--output",
            str(results),
            "--markdown",
            str(markdown),
            "--workdir",
            str(out / "work"),
        ],
        cwd=ROOT,
        env={**os.environ, "CONDOR_HOME": str(out / "home")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return results, markdown, done.stdout


def test_results_json_has_every_asked_figure(bench_run: tuple[Path, Path, str]) -> None:
    results, _, _ = bench_run
    document = json.loads(results.read_text())
    assert set(document["figures"]) == set(CHEAP)
    for key, entry in document["figures"].items():
        assert entry["min"] <= entry["median"] <= entry["max"], key
        assert len(entry["samples"]) == 1 and entry["unit"], key
        assert "target" in entry and "holds" in entry, key
    assert document["figures"]["backfill_runs_for_1000_tags"]["median"] == 40  # 1000 / 25
    dedup = document["figures"]["dedup_100k_seconds"]
    assert dedup["target"] == "<= 10.0" and isinstance(dedup["holds"], bool)
    for fact in ("machine", "vllm_version", "torch_version", "date", "git_commit", "model"):
        assert document[fact], fact
    assert document["machine"]["cores"] >= 1


def test_table_is_printed_and_markdown_prose_is_kept(bench_run: tuple[Path, Path, str]) -> None:
    _, markdown, stdout = bench_run
    header = stdout.splitlines()[0].split()
    assert header[:3] == ["figure", "median", "min"]
    assert all(key in stdout for key in CHEAP)
    text = markdown.read_text()
    assert text.startswith("# Benchmarks\n\nProse before.") and text.endswith("Prose after.\n")
    assert "old table" not in text and "| `backfill_runs_for_1000_tags` | 40.0 |" in text
    assert "\nProse between.\n" in text and "- Runs per 1,000 tags: 40" in text


def test_unknown_figure_is_refused_with_the_list() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "no_such_figure"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "no_such_figure" in done.stderr and "engine_overhead_ratio" in done.stderr
