"""The one LLM interface every asset uses: `generate(requests) -> GenerationResult`.

`LLMResource` owns what all engines share: per-request seeds, content-addressed keys, the
response cache (read before, written chunk by chunk during generation), validation before any
generation, structured-output parsing, and counters. Subclasses only turn uncached requests into
raw completions: `VLLMEngineResource` (in-process `vllm.LLM`), `OpenAIServerResource`
(`vllm serve` or any OpenAI-compatible endpoint) and `ScriptedLLMResource` (tests).
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from condor_dagster.core.llm import (
    Completion,
    GenerationStats,
    LLMRequest,
    RawCompletion,
    derive_seed,
    parse_structured,
    request_key,
)
from condor_dagster.core.paths import data_dir
from condor_dagster.resources.response_cache import ResponseCache

# Called as (done, total, stats) after each chunk reaches the cache; total counts the requests
# that need generation (cache misses), stats are running counts and final on the last call.
ProgressFn = Callable[[int, int, GenerationStats], None]
# Backends call this as each completion finishes: (index into the uncached list, completion).
SinkFn = Callable[[int, RawCompletion], None]

UNCACHED_FINISH_REASONS = frozenset({"rejected", "abort", "error"})
# A finished completion waits for its cache write until chunk_size completions are pending or, as
# later ones arrive, at most this many seconds: a killed run (SIGKILL, OOM) loses seconds of work,
# not a whole chunk.
CACHE_FLUSH_INTERVAL_S = 2.0

_CACHES: dict[Path, ResponseCache] = {}
_CACHES_LOCK = threading.Lock()


def _shared_cache(path: Path) -> ResponseCache:
    # One SQLite handle per file per process, shared by every resource instance and run.
    resolved = path.expanduser().resolve()
    with _CACHES_LOCK:
        if resolved not in _CACHES:
            _CACHES[resolved] = ResponseCache(resolved)
        return _CACHES[resolved]


class LLMBackendError(RuntimeError):
    """The engine or server failed (infrastructure, not data). Finished completions were saved
    to the response cache before this was raised, so a rerun resumes."""


@dataclass
class GenerationResult:
    """Completions in request order, plus the counters of the call."""

    completions: list[Completion]
    stats: GenerationStats = field(default_factory=GenerationStats)

    def __len__(self) -> int:
        return len(self.completions)

    def __iter__(self) -> Iterator[Completion]:
        return iter(self.completions)

    def __getitem__(self, index: int) -> Completion:
        return self.completions[index]


class LLMResource(dg.ConfigurableResource):
    """Base of every LLM resource. Assets type their parameter as `LLMResource`."""

    seed: int = Field(default=0, ge=0)
    """Base seed; each request's seed derives from it and the request content."""
    chunk_size: int = Field(default=1024, ge=1)
    """Requests per engine submission and most completions per cache write. Completions reach
    the cache as they finish (within CACHE_FLUSH_INTERVAL_S), so a crash loses seconds of work."""
    use_cache: bool = True
    """Read and write the persistent response cache."""
    cache_path: str | None = None
    """SQLite file of the response cache; default: <CONDOR_DATA_DIR>/llm_cache.sqlite3."""

    _identity: dict[str, Any] | None = PrivateAttr(default=None)

    # -- what a backend provides ------------------------------------------------------------
    @abstractmethod
    def engine_identity(self) -> dict[str, Any]:
        """Model + engine settings that change outputs; part of every cache key."""

    @abstractmethod
    def engine_info(self) -> tuple[str, str, str]:
        """(model id, engine name, engine version) recorded on each completion."""

    @abstractmethod
    def _generate_uncached(
        self, requests: Sequence[LLMRequest], seeds: Sequence[int], sink: SinkFn
    ) -> None:
        """Generate every request, calling `sink(i, raw)` as each finishes (any order)."""

    def prepare(self) -> None:
        """Load the engine or check the server; called before timing starts."""

    def context_length(self) -> int | None:
        """The model's max_model_len (prompt + completion), when the backend knows it."""
        return None

    # -- shared machinery -------------------------------------------------------------------
    def response_cache(self) -> ResponseCache | None:
        if not self.use_cache:
            return None
        path = Path(self.cache_path) if self.cache_path else data_dir() / "llm_cache.sqlite3"
        return _shared_cache(path)

    def validate_requests(self, requests: Sequence[LLMRequest]) -> None:
        """Fail before any generation on requests the engine can never serve."""
        limit = self.context_length()
        if limit is None:
            return
        worst = max((r.sampling.max_tokens for r in requests), default=0)
        if worst > limit:
            raise ValueError(
                f"max_tokens must be <= max_model_len ({limit}), got {worst}; lower max_tokens "
                "in the generation settings or raise max_model_len on the LLM resource"
            )

    def _cached_identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = self.engine_identity()
        return self._identity

    def generate(
        self, requests: Sequence[LLMRequest], progress: ProgressFn | None = None
    ) -> GenerationResult:
        """Complete every request. Cached completions are replayed; the rest are generated in
        chunks and cached as they finish. Parse failures and truncations are reported on the
        completion, never raised; infrastructure failures raise `LLMBackendError`."""
        self.validate_requests(requests)
        identity = self._cached_identity()
        model, engine, version = self.engine_info()
        seeds = [derive_seed(r, self.seed) for r in requests]
        keys = [request_key(r, s, identity) for r, s in zip(requests, seeds, strict=True)]
        cache = self.response_cache()
        found = cache.get_many(keys) if cache else {}
        fresh: dict[str, RawCompletion] = {}

        # Identical requests (same key) are generated once.
        todo = list(dict.fromkeys(k for k in keys if k not in found))
        first_index: dict[str, int] = {}
        for i, key in enumerate(keys):
            first_index.setdefault(key, i)
        stats = GenerationStats()
        running = GenerationStats()
        total = len(todo)
        pending: list[tuple[str, RawCompletion]] = []
        lock = threading.Lock()
        oldest_pending = 0.0  # when the oldest pending completion arrived

        def flush() -> None:
            if cache and pending:
                cache.put_many(pending)
            pending.clear()

        def sink(i: int, raw: RawCompletion) -> None:
            nonlocal oldest_pending
            with lock:
                key = todo[i]
                fresh[key] = raw
                running.cache_misses += 1
                running.generated_completion_tokens += raw.completion_tokens
                running.generation_seconds = time.perf_counter() - started
                # Rejected requests are data errors, aborted ones unfinished work: neither is
                # cached, so a rerun asks again.
                if raw.finish_reason not in UNCACHED_FINISH_REASONS:
                    if not pending:
                        oldest_pending = time.perf_counter()
                    pending.append((key, raw))
                overdue = time.perf_counter() - oldest_pending >= CACHE_FLUSH_INTERVAL_S
                if len(pending) >= self.chunk_size or (pending and overdue):
                    flush()
                    if progress:
                        progress(len(fresh), total, running)

        if todo:
            self.prepare()
        started = time.perf_counter()
        if todo:
            try:
                self._generate_uncached(
                    [requests[first_index[k]] for k in todo],
                    [seeds[first_index[k]] for k in todo],
                    sink,
                )
            finally:
                with lock:
                    flush()
            missing = [k for k in todo if k not in fresh]
            if missing:
                raise LLMBackendError(
                    f"{type(self).__name__} returned {total - len(missing)} of {total} "
                    "completions without raising; this is a bug in the backend"
                )
        stats.generation_seconds = time.perf_counter() - started

        completions = []
        for request, seed, key in zip(requests, seeds, keys, strict=True):
            raw = found.get(key)
            # A repeat of a request generated earlier in this call counts as a cache hit.
            cached = raw is not None or key not in fresh
            if raw is None:
                raw = fresh.pop(key)
                found[key] = raw
            error: str | None
            if raw.finish_reason == "rejected":
                parsed, error = None, f"rejected: {raw.text}"
            else:
                parsed, error = parse_structured(raw.text, raw.finish_reason, request.schema)
            completion = Completion(
                text=raw.text if raw.finish_reason != "rejected" else "",
                finish_reason=raw.finish_reason,
                prompt_tokens=raw.prompt_tokens,
                completion_tokens=raw.completion_tokens,
                latency_s=raw.latency_s,
                model=model,
                engine=engine,
                engine_version=version,
                seed=seed,
                key=key,
                cached=cached,
                parsed=parsed,
                parse_error=error,
            )
            stats.add(completion)
            completions.append(completion)
        if progress:
            progress(total, total, stats)
        return GenerationResult(completions, stats)
