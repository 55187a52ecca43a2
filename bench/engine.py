"""engine_overhead_ratio and cache_replay_seconds_per_1k: the LLM resource on the in-process
engine vs raw `vllm.LLM.chat` on the same engine instance and requests."""

from __future__ import annotations

import time

from bench.core import Context, Result, ratios, timed
from bench.services import chat_requests, raw_chat


def run(ctx: Context) -> dict[str, Result]:
    services = ctx.services
    sizes = ctx.sizes
    requests = chat_requests(sizes.chat_requests, sizes.answer_max_tokens)
    llm = services.raw_engine()
    resources = []

    def resource_side() -> float:
        # A fresh cache file per repetition: every request is generated, and the cost of
        # hashing, seeding, cache writes and parsing is inside the timing.
        resource = services.engine_resource(ctx)
        resource.response_cache()  # opened once per process in real runs, not per call
        resources.append(resource)
        result = None

        def go() -> None:
            nonlocal result
            result = resource.generate(requests)

        elapsed = timed(go)
        assert result is not None and result.stats.cache_misses == len(requests)
        return elapsed

    tokens: list[int] = []

    def raw_side() -> float:
        return timed(lambda: tokens.append(raw_chat(llm, requests)))

    ctx.log(f"engine overhead: warm-up, then {ctx.reps} x (resource, raw) on {len(requests)}")
    raw_side()
    resource_side()
    # The order alternates (resource first, then raw first, ...): the second side of a pair
    # otherwise always runs on a warmer or a more loaded machine.
    ours: list[float] = []
    raw: list[float] = []
    for rep in range(ctx.reps):
        if rep % 2:
            raw.append(raw_side())
            ours.append(resource_side())
        else:
            ours.append(resource_side())
            raw.append(raw_side())
    tok_s = [t / s for t, s in zip(tokens[1:], raw, strict=True)]
    overhead_ms = [(o - r) / len(requests) * 1000 for o, r in zip(ours, raw, strict=True)]

    # Replay: the same requests again on a cache a resource run just filled.
    replay_n = min(sizes.replay_requests, len(requests))
    replayed = requests[:replay_n]
    replay: list[float] = []
    for resource in resources[-ctx.reps :]:
        began = time.perf_counter()
        again = resource.generate(replayed)
        seconds = time.perf_counter() - began
        assert again.stats.cache_hits == replay_n
        replay.append(seconds * 1000 / replay_n)
    return {
        "engine_overhead_ratio": Result(
            ratios(ours, raw),
            note=(
                f"N={len(requests)} chat requests, max_tokens {sizes.answer_max_tokens}; "
                f"raw {_med(raw):.2f} s, resource {_med(ours):.2f} s "
                f"({_med(overhead_ms):+.2f} ms per request)"
            ),
            detail={
                "requests": len(requests),
                "max_tokens": sizes.answer_max_tokens,
                "raw_seconds": raw,
                "resource_seconds": ours,
                "raw_completion_tokens_per_s": tok_s,
                "resource_overhead_ms_per_request": overhead_ms,
            },
        ),
        "cache_replay_seconds_per_1k": Result(
            replay,
            note=f"{replay_n} cached completions replayed through generate()",
            detail={"requests": replay_n},
        ),
    }


def _med(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
