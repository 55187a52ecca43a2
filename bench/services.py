"""The one in-process engine and the one `vllm serve` of a bench run, and the shared requests.

Both load once per run (a minute or more each on 2 cores): they start together, the server in
its own process while the engine loads here, and every LLM figure reuses them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.core import Context
from condor_dagster.core.llm import LLMRequest, SamplingParams, derive_seed
from condor_dagster.resources.vllm_engine import VLLMEngineResource, shutdown_engines
from condor_dagster.resources.vllm_server_process import VLLMServerProcess

# The test suite's engine settings (tests/conftest.py): the same model and context.
MAX_MODEL_LEN = 1024


@dataclass
class Services:
    engine_settings: dict[str, Any]
    engine_load_s: float
    server: VLLMServerProcess | None
    server_start_s: float | None
    _cache_files: int = field(default=0)

    def engine_resource(self, ctx: Context, **overrides: Any) -> VLLMEngineResource:
        """A resource on the shared engine with a fresh response cache (every request is a
        miss, so it generates)."""
        return VLLMEngineResource(
            **self.engine_settings, cache_path=str(self.fresh_cache(ctx)), **overrides
        )

    def fresh_cache(self, ctx: Context) -> Any:
        self._cache_files += 1
        return ctx.workdir / "caches" / f"cache-{self._cache_files}.sqlite3"

    def raw_engine(self) -> Any:
        """The `vllm.LLM` behind every resource of these settings (the process registry's)."""
        return VLLMEngineResource(**self.engine_settings).get_engine()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        shutdown_engines()


class _Starter(threading.Thread):
    def __init__(self, process: VLLMServerProcess):
        super().__init__(name="vllm-serve-start", daemon=True)
        self.process = process
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.process.start(timeout_s=900)
        except BaseException as exc:  # re-raised in the main thread by start_services
            self.error = exc


def start_services(ctx: Context, *, server: bool) -> Services:
    """Load the engine here while `vllm serve` (when asked for) starts beside it."""
    settings: dict[str, Any] = {
        "model": str(ctx.model_dir),
        "max_model_len": MAX_MODEL_LEN,
        "enforce_eager": True,
    }
    process = None
    began = time.perf_counter()
    if server:
        ctx.log("starting vllm serve (tiny model) in the background")
        process = VLLMServerProcess(
            str(ctx.model_dir),
            max_model_len=MAX_MODEL_LEN,
            extra_args=["--enforce-eager"],
            log_path=ctx.workdir / "vllm-server.log",
        )
        # start() polls until the server answers; a thread lets the engine load meanwhile.
        starter = _Starter(process)
        starter.start()
    ctx.log("loading the in-process vLLM engine")
    load_began = time.perf_counter()
    VLLMEngineResource(**settings).get_engine()
    engine_load_s = time.perf_counter() - load_began
    ctx.log(f"engine loaded in {engine_load_s:.1f} s")
    server_start_s = None
    if process is not None:
        starter.join()
        if starter.error is not None:
            raise starter.error
        server_start_s = time.perf_counter() - began
        ctx.log(f"vllm serve ready on {process.base_url} after {server_start_s:.1f} s")
    return Services(settings, engine_load_s, process, server_start_s)


TOPICS = [
    "renewable energy storage",
    "raising a puppy",
    "negotiating a salary",
    "the history of printing",
    "home espresso",
    "learning a second language",
    "urban cycling safety",
    "writing unit tests",
    "planning a wedding budget",
    "caring for an aging parent",
    "choosing a mortgage",
    "volcano formation",
    "stage fright",
    "composting in apartments",
    "marathon training",
    "reading a nutrition label",
]
TASKS = [
    "Explain step by step",
    "Give three practical tips about",
    "Write a short story about",
    "Compare two common approaches to",
    "Answer in a bulleted list: what should a beginner know about",
    "As a friendly coach, talk me through",
    "Summarise the main debates around",
]


def chat_requests(n: int, max_tokens: int, salt: str = "") -> list[LLMRequest]:
    """`n` distinct chat requests shaped like the pipeline's: a system line and a question."""
    requests = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        task = TASKS[(i // len(TOPICS)) % len(TASKS)]
        requests.append(
            LLMRequest.chat(
                [
                    {"role": "system", "content": "You are a helpful, precise assistant."},
                    {"role": "user", "content": f"{task} {topic} (case {i}{salt})."},
                ],
                SamplingParams(temperature=0.7, max_tokens=max_tokens),
            )
        )
    return requests


def raw_chat(llm: Any, requests: list[LLMRequest], base_seed: int = 0) -> int:
    """What a script on raw vLLM writes for the same work: one `LLM.chat` over every request
    with the same sampling params and seeds. Returns the completion tokens."""
    from vllm import SamplingParams as VSamplingParams

    params = [
        VSamplingParams(
            temperature=r.sampling.temperature,
            top_p=r.sampling.top_p,
            top_k=r.sampling.top_k,
            max_tokens=r.sampling.max_tokens,
            repetition_penalty=r.sampling.repetition_penalty,
            seed=derive_seed(r, base_seed),
        )
        for r in requests
    ]
    outputs = llm.chat([r.messages_as_dicts() for r in requests], params, use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outputs)
