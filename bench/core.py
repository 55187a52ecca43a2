"""What every figure shares: its definition, repeated measurement, and the run's context."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Direction = Literal["<=", ">="]


@dataclass(frozen=True)
class Figure:
    """One line of the table: a key in results.json, a unit, and a target (None: report)."""

    key: str
    unit: str
    meaning: str
    target: float | None = None
    direction: Direction | None = None
    aim: float | None = None
    """A soft goal for report-only figures (shown, never judged)."""


@dataclass
class Result:
    """The samples of one figure (one per repetition) and what explains them."""

    samples: list[float]
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))

    def holds(self, figure: Figure) -> bool | None:
        if figure.target is None:
            return None
        if figure.direction == "<=":
            return self.median <= figure.target
        return self.median >= figure.target


def paired(
    reps: int, first: Callable[[], float], second: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Run the two sides alternately, A/B/A/B, so load on the shared machine hits both."""
    a, b = [], []
    for _ in range(reps):
        a.append(first())
        b.append(second())
    return a, b


def ratios(top: list[float], bottom: list[float]) -> list[float]:
    return [t / b for t, b in zip(top, bottom, strict=True)]


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """`with stopwatch() as elapsed: ...; elapsed()` gives seconds (frozen at block end)."""
    began = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - began
    end.append(time.perf_counter())


def timed(fn: Callable[[], Any]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


@dataclass
class Sizes:
    """Problem sizes; --quick shrinks them for development and the test."""

    chat_requests: int = 1024
    chat_max_tokens: int = 64
    # The engine and server figures' generation budget: a short draft answer (the pipeline's
    # answers ask for up to 1,024 tokens and questions for 512; see BENCHMARKS.md).
    answer_max_tokens: int = 256
    replay_requests: int = 1000
    server_requests: int = 512
    sequential_requests: int = 32
    pipeline_tags: int = 8
    pipeline_questions: tuple[int, int] = (8, 64)
    embed_questions: int = 5000
    dedup_exact_rows: int = 100_000
    dedup_approx_rows: int = 1_000_000
    recall_sample: int = 500
    export_rows: int = 200_000
    backfill_tags: int = 1000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            chat_requests=64,
            chat_max_tokens=16,
            answer_max_tokens=16,
            replay_requests=64,
            server_requests=64,
            sequential_requests=8,
            pipeline_tags=8,
            pipeline_questions=(2, 6),
            embed_questions=200,
            dedup_exact_rows=5_000,
            dedup_approx_rows=20_000,
            recall_sample=200,
            export_rows=4_000,
            backfill_tags=1000,
        )


@dataclass
class Context:
    """Settings of one bench run, plus the engine and server, started on first use."""

    quick: bool
    reps: int
    sizes: Sizes
    workdir: Path
    model_dir: Path
    services: Any = None  # bench.llm.Services, created by the LLM groups

    def smollm2_dir(self) -> Path:
        """SmolLM2-135M-Instruct, installed into <CONDOR_HOME>/models on first use."""
        from condor_dagster.resources.model_store import install_model

        return install_model("smollm2-135m-instruct")

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
