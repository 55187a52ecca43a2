"""The shared LLMResource machinery (seeds, keys, cache, chunked writes, validation, parsing),
exercised through the scripted backend, which implements the same interface as the engines."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from pydantic import BaseModel, ValidationError

from condor_dagster.core.llm import GenerationStats, LLMRequest, SamplingParams
from condor_dagster.resources.llm import GenerationResult, LLMBackendError, LLMResource
from condor_dagster.resources.response_cache import ResponseCache
from condor_dagster.resources.scripted_llm import ScriptedLLMResource, ScriptRule


class Verdict(BaseModel):
    topic: str
    score: int


RULES = [
    ScriptRule(pattern=r"^judge", response='{"topic": "河流 🌊", "score": 8}'),
    ScriptRule(pattern=r"^long", response='{"topic": "cut', finish_reason="length"),
    ScriptRule(pattern=r"^echo (\d+)", response="answer {sample_index} seed {seed}"),
]


def _llm(tmp_path: Path, **kwargs: object) -> ScriptedLLMResource:
    kwargs.setdefault("cache_path", str(tmp_path / "c.sqlite3"))
    return ScriptedLLMResource(rules=RULES, **kwargs)  # type: ignore[arg-type]


def _cache(tmp_path: Path) -> ResponseCache:
    return ResponseCache(tmp_path / "c.sqlite3")


def _echo(i: int, sample_index: int = 0, **sampling: object) -> LLMRequest:
    return LLMRequest.chat(
        [{"role": "user", "content": f"echo {i}"}],
        sampling=SamplingParams(**sampling) if sampling else None,  # type: ignore[arg-type]
        sample_index=sample_index,
    )


def _judge(topic: str = "rivers") -> LLMRequest:
    return LLMRequest.chat([{"role": "user", "content": f"judge {topic}"}], schema=Verdict)


@pytest.fixture
def backend_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Last-message contents of the requests each `_generate_uncached` call was given."""
    calls: list[list[str]] = []
    original = ScriptedLLMResource._generate_uncached

    def recording(self, requests, seeds, sink):  # type: ignore[no-untyped-def]
        calls.append([r.messages[-1].content for r in requests])
        return original(self, requests, seeds, sink)

    monkeypatch.setattr(ScriptedLLMResource, "_generate_uncached", recording)
    return calls


# -- basic generation --------------------------------------------------------------------------


def test_completions_in_request_order_with_metadata(tmp_path: Path) -> None:
    llm = _llm(tmp_path, model_name="scripted-7b")
    requests = [_echo(i, sample_index=i) for i in range(12)]
    result = llm.generate(requests)

    assert isinstance(result, GenerationResult)
    assert len(result) == 12
    texts = [c.text for c in result]
    assert [t.split()[1] for t in texts] == [str(i) for i in range(12)]
    for completion in result:
        assert completion.model == "scripted-7b"
        assert completion.engine == "scripted"
        assert completion.engine_version == "0"
        assert completion.text == f"answer {completion.text.split()[1]} seed {completion.seed}"
        assert 0 <= completion.seed <= 2**31 - 1
        assert len(completion.key) == 64
        assert completion.cached is False
        assert completion.finish_reason == "stop"
        assert completion.parsed is None and completion.parse_error is None
    assert len({c.key for c in result}) == 12
    assert len({c.seed for c in result}) == 12
    assert result.stats.requests == 12
    assert result.stats.cache_misses == 12


def test_explicit_seed_is_passed_to_the_backend(tmp_path: Path) -> None:
    result = _llm(tmp_path).generate([_echo(1, seed=4242)])
    assert result[0].seed == 4242
    assert result[0].text == "answer 0 seed 4242"


def test_base_seed_changes_derived_seeds_and_keys(tmp_path: Path) -> None:
    a = _llm(tmp_path, seed=0).generate([_echo(1)])[0]
    b = _llm(tmp_path, seed=1).generate([_echo(1)])[0]
    assert a.seed != b.seed
    assert a.key != b.key
    assert b.cached is False


def test_structured_request_parses_to_schema_instance(tmp_path: Path) -> None:
    result = _llm(tmp_path).generate([_judge(), _echo(0)])
    verdict = result[0]
    assert isinstance(verdict.parsed, Verdict)
    assert verdict.parsed == Verdict(topic="河流 🌊", score=8)
    assert verdict.parse_error is None
    assert json.loads(verdict.text) == {"topic": "河流 🌊", "score": 8}
    assert result[1].parsed is None
    assert result.stats.parse_failures == 0


def test_structured_request_with_unparseable_text_reports_error(tmp_path: Path) -> None:
    request = LLMRequest.chat([{"role": "user", "content": "echo 5"}], schema=Verdict)
    result = _llm(tmp_path).generate([request])
    assert result[0].parsed is None
    assert result[0].parse_error is not None
    assert result[0].parse_error.startswith("invalid_json")
    assert result.stats.parse_failures == 1


def test_truncated_completion_is_reported_not_raised(tmp_path: Path) -> None:
    request = LLMRequest.chat([{"role": "user", "content": "long essay"}], schema=Verdict)
    result = _llm(tmp_path).generate([request, _judge()])
    truncated = result[0]
    assert truncated.truncated is True
    assert truncated.finish_reason == "length"
    assert truncated.parsed is None
    assert truncated.parse_error is not None and truncated.parse_error.startswith("truncated")
    assert result[1].truncated is False and isinstance(result[1].parsed, Verdict)
    assert result.stats.truncated == 1
    assert result.stats.parse_failures == 1
    assert result.stats.finish_reasons == {"length": 1, "stop": 1}


def test_empty_batch_returns_empty_result(tmp_path: Path) -> None:
    result = _llm(tmp_path).generate([])
    assert len(result) == 0
    assert result.stats.requests == 0


# -- cache -------------------------------------------------------------------------------------


def test_second_identical_call_is_served_from_cache(
    tmp_path: Path, backend_calls: list[list[str]]
) -> None:
    requests = [_echo(i, sample_index=i) for i in range(8)] + [_judge()]
    first = _llm(tmp_path).generate(requests)
    assert first.stats.cache_misses == 9
    assert _cache(tmp_path).count() == 9

    # A fresh resource instance (as in a new run) with the same settings.
    second = _llm(tmp_path).generate(requests)
    assert len(backend_calls) == 1, "the backend must not be called when all are cached"
    assert second.stats.cache_hits == 9
    assert second.stats.cache_misses == 0
    assert all(c.cached for c in second)
    assert [c.text for c in second] == [c.text for c in first]
    assert [c.seed for c in second] == [c.seed for c in first]
    assert [c.key for c in second] == [c.key for c in first]
    assert second[-1].parsed == first[-1].parsed == Verdict(topic="河流 🌊", score=8)
    assert second.stats.as_metadata()["tokens_per_second"] == 0.0


def test_cache_survives_different_chunk_size(tmp_path: Path) -> None:
    requests = [_echo(i) for i in range(5)]
    _llm(tmp_path, chunk_size=2).generate(requests)
    again = _llm(tmp_path, chunk_size=100).generate(requests)
    assert again.stats.cache_hits == 5


def test_partially_cached_batch(tmp_path: Path, backend_calls: list[list[str]]) -> None:
    requests = [_echo(i) for i in range(20)]
    _llm(tmp_path).generate(requests[:10])
    result = _llm(tmp_path).generate(requests)
    assert backend_calls[-1] == [f"echo {i}" for i in range(10, 20)]
    assert result.stats.cache_hits == 10
    assert result.stats.cache_misses == 10
    assert [c.cached for c in result] == [True] * 10 + [False] * 10
    assert [c.text.split()[0] for c in result] == ["answer"] * 20
    assert _cache(tmp_path).count() == 20


def test_identical_requests_in_one_batch_are_generated_once(
    tmp_path: Path, backend_calls: list[list[str]]
) -> None:
    result = _llm(tmp_path).generate([_echo(1), _echo(2), _echo(1)])
    assert backend_calls == [["echo 1", "echo 2"]]
    assert result.stats.cache_misses == 2
    assert result.stats.cache_hits == 1
    assert [c.cached for c in result] == [False, False, True]
    assert result[0].key == result[2].key
    assert result[0].text == result[2].text
    assert _cache(tmp_path).count() == 2


def test_sample_index_makes_repeats_distinct(tmp_path: Path) -> None:
    result = _llm(tmp_path).generate([_echo(1, sample_index=0), _echo(1, sample_index=1)])
    assert result.stats.cache_misses == 2
    assert result[0].seed != result[1].seed
    assert result[0].key != result[1].key
    assert result[0].text == f"answer 0 seed {result[0].seed}"
    assert result[1].text == f"answer 1 seed {result[1].seed}"


def test_different_model_name_does_not_reuse_cache(tmp_path: Path) -> None:
    requests = [_echo(i) for i in range(3)]
    _llm(tmp_path, model_name="model-a").generate(requests)
    other = _llm(tmp_path, model_name="model-b").generate(requests)
    assert other.stats.cache_hits == 0
    assert all(c.model == "model-b" for c in other)


def test_changed_rules_do_not_reuse_cache(tmp_path: Path) -> None:
    requests = [_echo(i) for i in range(3)]
    _llm(tmp_path).generate(requests)
    changed = ScriptedLLMResource(
        rules=[ScriptRule(pattern="echo", response="different")],
        cache_path=str(tmp_path / "c.sqlite3"),
    ).generate(requests)
    assert changed.stats.cache_hits == 0
    assert [c.text for c in changed] == ["different"] * 3


def test_engine_identity_excludes_fault_injection_and_cache_settings(tmp_path: Path) -> None:
    base = _llm(tmp_path).engine_identity()
    assert _llm(tmp_path, fail_after=3, chunk_size=2).engine_identity() == base
    assert _llm(tmp_path, cache_path=str(tmp_path / "other.sqlite3")).engine_identity() == base
    assert _llm(tmp_path, use_cache=False).engine_identity() == base
    assert _llm(tmp_path, model_name="other").engine_identity() != base


def test_crash_mid_batch_keeps_finished_work_and_rerun_resumes(
    tmp_path: Path, backend_calls: list[list[str]]
) -> None:
    requests = [_echo(i, sample_index=i) for i in range(15)]
    crashing = _llm(tmp_path, fail_after=7, chunk_size=3)
    with pytest.raises(LLMBackendError, match="fail_after"):
        crashing.generate(requests)
    # Chunks of 3, 3 and the partial 1 that was in flight: all 7 finished completions saved.
    assert _cache(tmp_path).count() == 7

    rerun = _llm(tmp_path, chunk_size=3).generate(requests)
    assert backend_calls[-1] == [f"echo {i}" for i in range(7, 15)]
    assert rerun.stats.cache_hits == 7
    assert rerun.stats.cache_misses == 8
    assert [c.cached for c in rerun] == [True] * 7 + [False] * 8
    assert [c.text for c in rerun] == [f"answer {i} seed {c.seed}" for i, c in enumerate(rerun)]
    assert _cache(tmp_path).count() == 15


def test_validate_requests_rejects_max_tokens_over_context(
    tmp_path: Path, backend_calls: list[list[str]]
) -> None:
    llm = _llm(tmp_path, max_context=1024)
    requests = [_echo(0, max_tokens=64), _echo(1, max_tokens=4096)]
    with pytest.raises(ValueError) as excinfo:
        llm.generate(requests)
    assert "max_tokens must be <= max_model_len (1024), got 4096" in str(excinfo.value)
    assert backend_calls == []
    assert _cache(tmp_path).count() == 0


def test_validate_requests_accepts_max_tokens_at_context(tmp_path: Path) -> None:
    result = _llm(tmp_path, max_context=1024).generate([_echo(0, max_tokens=1024)])
    assert result.stats.cache_misses == 1


def test_use_cache_false_writes_nothing_and_regenerates(
    tmp_path: Path, backend_calls: list[list[str]]
) -> None:
    llm = _llm(tmp_path, use_cache=False)
    requests = [_echo(i) for i in range(4)]
    first = llm.generate(requests)
    second = llm.generate(requests)
    assert backend_calls == [[f"echo {i}" for i in range(4)]] * 2
    assert first.stats.cache_misses == 4
    assert second.stats.cache_misses == 4
    assert second.stats.cache_hits == 0
    assert not any(c.cached for c in second)
    assert [c.text for c in second] == [c.text for c in first]
    assert _cache(tmp_path).count() == 0


def test_progress_callback_reports_done_and_total(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    last_stats: list[GenerationStats] = []

    def progress(done: int, total: int, stats: GenerationStats) -> None:
        assert isinstance(stats, GenerationStats)
        calls.append((done, total))
        last_stats[:] = [stats]

    _llm(tmp_path, chunk_size=2).generate([_echo(i) for i in range(5)], progress=progress)
    assert calls, "progress was never called"
    assert calls[-1] == (5, 5)
    assert all(total == 5 for _, total in calls)
    dones = [done for done, _ in calls]
    assert dones == sorted(dones)
    assert len(calls) >= 3  # after chunks of 2, 2 and at the end
    assert last_stats[0].requests == 5
    assert last_stats[0].cache_misses == 5


def test_scriptrule_with_invalid_regex_fails_at_construction() -> None:
    with pytest.raises(ValidationError) as excinfo:
        ScriptRule(pattern="(unclosed", response="x")
    assert "'(unclosed'" in str(excinfo.value)
    assert "not a valid regular expression" in str(excinfo.value)


def test_scripted_resource_with_invalid_rule_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"\[a"):
        ScriptedLLMResource(
            rules=[{"pattern": "[a", "response": "x"}],  # type: ignore[list-item]
            cache_path=str(tmp_path / "c.sqlite3"),
        )


# -- Dagster integration -----------------------------------------------------------------------


def test_scripted_resource_works_as_dagster_resource(tmp_path: Path) -> None:
    @dg.asset
    def scored(llm: LLMResource) -> dg.MaterializeResult:
        result = llm.generate([_echo(i, sample_index=i) for i in range(3)])
        assert all(c.text.startswith("answer") for c in result)
        return dg.MaterializeResult(metadata={"requests": len(result)})

    outcome = dg.materialize(
        [scored],
        resources={"llm": _llm(tmp_path)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert outcome.success
    materializations = outcome.asset_materializations_for_node("scored")
    assert len(materializations) == 1
    assert materializations[0].metadata["requests"].value == 3
    assert _cache(tmp_path).count() == 3
