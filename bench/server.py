"""server_vs_sequential_speedup and server_vs_offline_ratio: the project's server client at its
default concurrency vs one request at a time (the seed scripts' loop) on the same `vllm serve`,
and vs the in-process engine on the same requests."""

from __future__ import annotations

from typing import Any

import httpx
import psutil

from bench.core import Context, Result, ratios, timed
from bench.services import chat_requests
from condor_dagster.core.llm import LLMRequest, derive_seed
from condor_dagster.resources.openai_server import OpenAIServerResource


def sequential(base_url: str, model: str, requests: list[LLMRequest]) -> int:
    """The seed scripts' pattern: a plain HTTP client, one request after the other (with
    keep-alive, which only helps it). Returns the completion tokens."""
    tokens = 0
    with httpx.Client(base_url=base_url, timeout=600) as client:
        for request in requests:
            s = request.sampling
            response = client.post(
                "/chat/completions",
                json={
                    "model": model,
                    "messages": request.messages_as_dicts(),
                    "temperature": s.temperature,
                    "top_p": s.top_p,
                    "max_tokens": s.max_tokens,
                    "seed": derive_seed(request),
                },
            )
            response.raise_for_status()
            tokens += int(response.json()["usage"]["completion_tokens"])
    return tokens


def run(ctx: Context) -> dict[str, Result]:
    services = ctx.services
    server = services.server
    sizes = ctx.sizes
    # Requests of their own (a salt), so no figure replays another's prefix cache state.
    requests = chat_requests(sizes.server_requests, sizes.answer_max_tokens, salt=" s")
    seq_requests = requests[: sizes.sequential_requests]
    served_model = str(ctx.model_dir)

    def server_side() -> tuple[float, int]:
        resource = OpenAIServerResource(
            base_url=server.base_url, cache_path=str(services.fresh_cache(ctx))
        )
        resource.response_cache()  # opened once per process in real runs, not per call
        out: dict[str, Any] = {}
        seconds = timed(lambda: out.setdefault("r", resource.generate(requests)))
        stats = out["r"].stats
        assert stats.cache_misses == len(requests)
        return seconds, stats.generated_completion_tokens

    def offline_side() -> tuple[float, int]:
        resource = services.engine_resource(ctx)
        resource.response_cache()
        out: dict[str, Any] = {}
        seconds = timed(lambda: out.setdefault("r", resource.generate(requests)))
        return seconds, out["r"].stats.generated_completion_tokens

    def sequential_side() -> tuple[float, int]:
        out: dict[str, int] = {}
        seconds = timed(
            lambda: out.setdefault("t", sequential(server.base_url, served_model, seq_requests))
        )
        return seconds, out["t"]

    ctx.log(
        f"server: warm-up, then {ctx.reps} x (server client {len(requests)}, in-process "
        f"{len(requests)}, sequential {len(seq_requests)})"
    )
    # Warm-up on a slice of each side (connections, server-side caches, code paths).
    OpenAIServerResource(
        base_url=server.base_url, cache_path=str(services.fresh_cache(ctx))
    ).generate(requests[:64])
    sequential(server.base_url, served_model, seq_requests[:4])
    rows: dict[str, list[tuple[float, int]]] = {"server": [], "offline": [], "sequential": []}
    sides = {"server": server_side, "offline": offline_side, "sequential": sequential_side}
    counts = {"server": len(requests), "offline": len(requests), "sequential": len(seq_requests)}
    assert server.process is not None
    cpu: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for _ in range(ctx.reps):
        for side, measure in sides.items():
            before = cpu_seconds(server.process.pid)
            rows[side].append(measure())
            after = cpu_seconds(server.process.pid)
            cpu[side].append(
                {k: (after[k] - before[k]) * 1000 / counts[side] for k in after}
                | {"wall": rows[side][-1][0] * 1000 / counts[side]}
            )
    tok_s = {side: [t / s for s, t in values] for side, values in rows.items()}
    req_s = {
        "server": [len(requests) / s for s, _ in rows["server"]],
        "offline": [len(requests) / s for s, _ in rows["offline"]],
        "sequential": [len(seq_requests) / s for s, _ in rows["sequential"]],
    }
    detail = {
        "requests": len(requests),
        "sequential_requests": len(seq_requests),
        "max_tokens": sizes.answer_max_tokens,
        "max_concurrency": OpenAIServerResource.model_fields["max_concurrency"].default,
        "completion_tokens_per_s": tok_s,
        "requests_per_s": req_s,
        # Where each side's time goes, per request (median over repetitions): CPU ms of this
        # process (the client, or the in-process engine's frontend), of the server's API process,
        # and of every vLLM engine-core and worker process; and wall ms.
        "cpu_ms_per_request": {
            side: {k: _m([r[k] for r in reps]) for k in reps[0]} for side, reps in cpu.items()
        },
    }
    return {
        "server_vs_sequential_speedup": Result(
            ratios(tok_s["server"], tok_s["sequential"]),
            note=(
                f"{_m(tok_s['server']):.0f} vs {_m(tok_s['sequential']):.0f} completion tok/s "
                f"({len(requests)} vs {len(seq_requests)} requests)"
            ),
            detail=detail,
        ),
        "server_vs_offline_ratio": Result(
            ratios(tok_s["server"], tok_s["offline"]),
            note=(
                f"{_m(tok_s['server']):.0f} vs {_m(tok_s['offline']):.0f} completion tok/s "
                "in-process"
            ),
            detail=detail,
        ),
    }


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of this process, the server's API process, and every engine process
    (the other descendants of this process: vLLM engine cores and workers, both engines')."""
    me = psutil.Process()

    def total(processes: list[psutil.Process]) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in processes)

    descendants = me.children(recursive=True)
    return {
        "this_process": total([me]),
        "server_api": total([p for p in descendants if p.pid == server_pid]),
        "engines": total([p for p in descendants if p.pid != server_pid]),
    }


def _m(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
