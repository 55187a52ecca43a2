"""Pure tests of the LLM request types, hashing, parsing, model references and the cache.

Nothing here may import dagster or vllm: these modules are shared by every backend and must stay
importable (and correct) without an engine.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from condor_dagster.core.llm import (
    ChatMessage,
    Completion,
    GenerationStats,
    LLMRequest,
    RawCompletion,
    SamplingParams,
    derive_seed,
    parse_structured,
    request_key,
)
from condor_dagster.core.model_ref import check_model_ref, model_fingerprint
from condor_dagster.resources.response_cache import ResponseCache

ENGINE = {"engine": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct", "fingerprint": "abc123"}


class Answer(BaseModel):
    question: str
    score: int


class OtherAnswer(BaseModel):
    question: str
    verdict: str


def _req(
    content: str = "Write a haiku about rivers.",
    *,
    sampling: SamplingParams | None = None,
    schema: type[BaseModel] | None = None,
    sample_index: int = 0,
) -> LLMRequest:
    return LLMRequest.chat(
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": content}],
        sampling=sampling,
        schema=schema,
        sample_index=sample_index,
    )


# -- import hygiene ----------------------------------------------------------------------------


def test_core_modules_do_not_import_dagster_or_vllm() -> None:
    code = (
        "import sys\n"
        "import condor_dagster.core.llm, condor_dagster.core.model_ref\n"
        "import condor_dagster.resources.response_cache\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'vllm'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"pure modules pulled in: {out.stdout.strip()}"


# -- derive_seed -------------------------------------------------------------------------------


def test_derive_seed_is_deterministic_across_calls_and_instances() -> None:
    first = derive_seed(_req(), base_seed=7)
    assert derive_seed(_req(), base_seed=7) == first
    assert derive_seed(_req(), base_seed=7) == derive_seed(_req(), base_seed=7)


def test_derive_seed_is_stable_across_processes() -> None:
    # Python's hash() is randomized per process; the seed must not depend on it.
    code = (
        "from condor_dagster.core.llm import LLMRequest, derive_seed\n"
        "r = LLMRequest.chat([{'role': 'system', 'content': 'You are terse.'},"
        " {'role': 'user', 'content': 'Write a haiku about rivers.'}])\n"
        "print(derive_seed(r, 7))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert int(out.stdout.strip()) == derive_seed(_req(), base_seed=7)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(_req("Write a haiku about lakes."), id="message-content"),
        pytest.param(
            LLMRequest.chat(
                [
                    {"role": "user", "content": "You are terse."},
                    {"role": "user", "content": "Write a haiku about rivers."},
                ]
            ),
            id="message-role",
        ),
        pytest.param(_req(sampling=SamplingParams(temperature=0.2)), id="temperature"),
        pytest.param(_req(sampling=SamplingParams(max_tokens=64)), id="max_tokens"),
        pytest.param(_req(sampling=SamplingParams(stop=("\n",))), id="stop"),
        pytest.param(_req(schema=Answer), id="schema"),
        pytest.param(_req(sample_index=1), id="sample_index"),
    ],
)
def test_derive_seed_changes_with_request_content(other: LLMRequest) -> None:
    assert derive_seed(other, base_seed=0) != derive_seed(_req(), base_seed=0)


def test_derive_seed_differs_between_schemas() -> None:
    assert derive_seed(_req(schema=Answer)) != derive_seed(_req(schema=OtherAnswer))


def test_derive_seed_changes_with_base_seed() -> None:
    seeds = {derive_seed(_req(), base_seed=b) for b in range(5)}
    assert len(seeds) == 5


def test_sample_index_gives_distinct_seeds_for_repeats() -> None:
    seeds = [derive_seed(_req(sample_index=i)) for i in range(20)]
    assert len(set(seeds)) == 20


@pytest.mark.parametrize("explicit", [0, 1, 12345, 2**31 - 1])
def test_explicit_sampling_seed_is_used_as_is(explicit: int) -> None:
    request = _req(sampling=SamplingParams(seed=explicit))
    assert derive_seed(request, base_seed=0) == explicit
    # base_seed does not override an explicit seed.
    assert derive_seed(request, base_seed=99) == explicit


def test_derived_seeds_fit_in_positive_int32() -> None:
    for i in range(300):
        seed = derive_seed(_req(f"prompt {i} 你好 🌊", sample_index=i), base_seed=i)
        assert isinstance(seed, int)
        assert 0 <= seed <= 2**31 - 1


# -- request_key -------------------------------------------------------------------------------


def test_request_key_equal_for_equal_inputs() -> None:
    a = request_key(_req(schema=Answer), 42, dict(ENGINE))
    b = request_key(_req(schema=Answer), 42, dict(ENGINE))
    assert a == b
    assert len(a) == 64 and all(c in "0123456789abcdef" for c in a)


def test_request_key_ignores_engine_identity_dict_order() -> None:
    reordered = dict(reversed(list(ENGINE.items())))
    assert request_key(_req(), 1, reordered) == request_key(_req(), 1, ENGINE)


@pytest.mark.parametrize(
    ("request_", "seed", "engine"),
    [
        pytest.param(_req(), 1, {**ENGINE, "model": "Qwen/Qwen2.5-0.5B-Instruct"}, id="model"),
        pytest.param(_req(), 1, {**ENGINE, "fingerprint": "def456"}, id="fingerprint"),
        pytest.param(_req(), 1, {**ENGINE, "engine": "openai"}, id="engine"),
        pytest.param(_req(), 1, {**ENGINE, "dtype": "float32"}, id="extra-engine-setting"),
        pytest.param(_req(), 2, ENGINE, id="seed"),
        pytest.param(_req("Write a haiku about lakes."), 1, ENGINE, id="messages"),
        pytest.param(_req(sampling=SamplingParams(top_p=0.9)), 1, ENGINE, id="sampling"),
        pytest.param(_req(schema=Answer), 1, ENGINE, id="schema"),
        pytest.param(_req(sample_index=3), 1, ENGINE, id="sample_index"),
    ],
)
def test_request_key_changes_with_each_input(
    request_: LLMRequest, seed: int, engine: dict[str, str]
) -> None:
    assert request_key(request_, seed, engine) != request_key(_req(), 1, ENGINE)


def test_request_key_differs_between_schemas() -> None:
    assert request_key(_req(schema=Answer), 1, ENGINE) != request_key(
        _req(schema=OtherAnswer), 1, ENGINE
    )


# -- parse_structured --------------------------------------------------------------------------


def test_parse_structured_valid_json_with_cjk_and_emoji() -> None:
    text = json.dumps({"question": "河流为什么会弯曲？🌊 なぜ", "score": 9}, ensure_ascii=False)
    parsed, error = parse_structured(text, "stop", Answer)
    assert error is None
    assert isinstance(parsed, Answer)
    assert parsed.question == "河流为什么会弯曲？🌊 なぜ"
    assert parsed.score == 9


def test_parse_structured_valid_json_with_escaped_unicode() -> None:
    text = json.dumps({"question": "河流 🌊", "score": 1})  # ASCII escapes, surrogate pairs
    parsed, error = parse_structured(text, "stop", Answer)
    assert error is None
    assert parsed == Answer(question="河流 🌊", score=1)


def test_parse_structured_truncated_when_finish_reason_length() -> None:
    # Even text that happens to be valid JSON is reported as truncated: the engine cut it.
    for text in ['{"question": "河流', json.dumps({"question": "q", "score": 1})]:
        parsed, error = parse_structured(text, "length", Answer)
        assert parsed is None
        assert error is not None and error.startswith("truncated")


@pytest.mark.parametrize("text", ["not json at all", '{"question": "q", "score": 1', "", "🌊"])
def test_parse_structured_invalid_json(text: str) -> None:
    parsed, error = parse_structured(text, "stop", Answer)
    assert parsed is None
    assert error is not None and error.startswith("invalid_json"), error


def test_parse_structured_schema_mismatch_names_the_field() -> None:
    parsed, error = parse_structured('{"question": "河流？", "score": "high"}', "stop", Answer)
    assert parsed is None
    assert error is not None and error.startswith("schema_mismatch"), error
    assert "score" in error
    assert "question" not in error


def test_parse_structured_missing_field_is_schema_mismatch() -> None:
    parsed, error = parse_structured('{"score": 3}', "stop", Answer)
    assert parsed is None
    assert error is not None and error.startswith("schema_mismatch"), error
    assert "question" in error


def test_parse_structured_without_schema_returns_nothing() -> None:
    assert parse_structured("free text 你好 🌊", "stop", None) == (None, None)
    assert parse_structured("{not json", "length", None) == (None, None)


# -- SamplingParams / LLMRequest ---------------------------------------------------------------


@pytest.mark.parametrize("value", [-0.5, -1])
def test_negative_temperature_is_rejected_with_value(value: float) -> None:
    with pytest.raises(ValidationError) as excinfo:
        SamplingParams(temperature=value)
    message = str(excinfo.value)
    assert "temperature must be >= 0" in message
    assert f"got {value}" in message


def test_zero_temperature_is_greedy_and_allowed() -> None:
    assert SamplingParams(temperature=0).temperature == 0.0


@pytest.mark.parametrize("value", [0, -5])
def test_non_positive_max_tokens_is_rejected(value: int) -> None:
    with pytest.raises(ValidationError, match="max_tokens"):
        SamplingParams(max_tokens=value)


def test_unknown_sampling_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=10)  # type: ignore[call-arg]


def test_sampling_params_are_frozen() -> None:
    params = SamplingParams()
    with pytest.raises(ValidationError):
        params.temperature = 0.1  # type: ignore[misc]
    assert params.temperature == 0.7


def test_key_fields_excludes_seed() -> None:
    fields = SamplingParams(seed=5, stop=("a",)).key_fields()
    assert "seed" not in fields
    assert fields["stop"] == ["a"]


def test_chat_without_messages_raises() -> None:
    with pytest.raises(ValueError, match="at least one chat message"):
        LLMRequest.chat([])


def test_chat_accepts_dicts_and_messages_alike() -> None:
    from_dicts = LLMRequest.chat([{"role": "user", "content": "hi"}])
    from_models = LLMRequest.chat([ChatMessage(role="user", content="hi")])
    assert from_dicts == from_models
    assert from_dicts.messages_as_dicts() == [{"role": "user", "content": "hi"}]


def test_chat_rejects_unknown_role() -> None:
    with pytest.raises(ValidationError):
        LLMRequest.chat([{"role": "tool", "content": "hi"}])


# -- check_model_ref ---------------------------------------------------------------------------


def test_check_model_ref_accepts_model_directory(tmp_path: Path) -> None:
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert check_model_ref(str(model)) == str(model)


def test_check_model_ref_rejects_directory_without_config(tmp_path: Path) -> None:
    model = tmp_path / "empty"
    model.mkdir()
    with pytest.raises(ValueError, match="not a model directory") as excinfo:
        check_model_ref(str(model))
    assert str(model) in str(excinfo.value)


def test_check_model_ref_rejects_plain_file(tmp_path: Path) -> None:
    file = tmp_path / "config.json"
    file.write_text("{}")
    with pytest.raises(ValueError, match="not a model directory"):
        check_model_ref(str(file))


@pytest.mark.parametrize("ref", ["/no/such/dir", "./x", "~/no-such-condor-model-dir"])
def test_check_model_ref_missing_path_points_to_tiny_model(
    ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # "./x" must not exist
    with pytest.raises(ValueError) as excinfo:
        check_model_ref(ref)
    message = str(excinfo.value)
    assert "does not exist" in message
    assert "condor tiny-model" in message
    assert ref in message


def test_check_model_ref_accepts_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_model_ref("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"


@pytest.mark.parametrize("ref", ["", "   "])
def test_check_model_ref_rejects_empty(ref: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        check_model_ref(ref)


# -- model_fingerprint -------------------------------------------------------------------------


def _make_model(root: Path, config: str = '{"hidden_size": 8}', weights: bytes = b"w" * 64) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(config)
    (root / "tokenizer.json").write_text('{"vocab": {"你": 0}}', encoding="utf-8")
    (root / "model.safetensors").write_bytes(weights)
    return root


def test_fingerprint_depends_on_content_not_location(tmp_path: Path) -> None:
    a = _make_model(tmp_path / "a")
    b = _make_model(tmp_path / "elsewhere" / "b")
    assert model_fingerprint(str(a)) == model_fingerprint(str(b))
    assert model_fingerprint(str(a)) == model_fingerprint(str(a))


def test_fingerprint_changes_with_config(tmp_path: Path) -> None:
    a = _make_model(tmp_path / "a")
    b = _make_model(tmp_path / "b", config='{"hidden_size": 16}')
    assert model_fingerprint(str(a)) != model_fingerprint(str(b))


def test_fingerprint_changes_with_weight_bytes_of_same_size(tmp_path: Path) -> None:
    a = _make_model(tmp_path / "a", weights=b"w" * 64)
    b = _make_model(tmp_path / "b", weights=b"w" * 63 + b"x")
    assert model_fingerprint(str(a)) != model_fingerprint(str(b))


def test_fingerprint_changes_when_weights_rewritten_in_place(tmp_path: Path) -> None:
    model = _make_model(tmp_path / "m")
    before = model_fingerprint(str(model))
    (model / "model.safetensors").write_bytes(b"v" * 64)
    assert model_fingerprint(str(model)) != before


def test_fingerprint_changes_with_chat_template_file(tmp_path: Path) -> None:
    # transformers >= 4.50 saves the chat template to chat_template.jinja (not into
    # tokenizer_config.json); the template decides the prompt vLLM sees, so it must count.
    a = _make_model(tmp_path / "a")
    b = _make_model(tmp_path / "b")
    (a / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    (b / "chat_template.jinja").write_text("<|im_start|>{{ messages[0]['content'] }}")
    assert model_fingerprint(str(a)) != model_fingerprint(str(b))


def test_fingerprint_of_hub_id_is_stable_and_distinct() -> None:
    assert model_fingerprint("Qwen/Qwen2.5-7B-Instruct") == model_fingerprint(
        "Qwen/Qwen2.5-7B-Instruct"
    )
    assert model_fingerprint("Qwen/Qwen2.5-7B-Instruct") != model_fingerprint(
        "Qwen/Qwen2.5-0.5B-Instruct"
    )


# -- ResponseCache -----------------------------------------------------------------------------


def _raw(text: str, finish_reason: str = "stop", tokens: int = 3) -> RawCompletion:
    return RawCompletion(
        text=text,
        finish_reason=finish_reason,
        prompt_tokens=7,
        completion_tokens=tokens,
        latency_s=0.25,
    )


def test_cache_round_trip_and_count(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "nested" / "c.sqlite3")
    assert cache.count() == 0
    items = [("k1", _raw("one")), ("k2", _raw("two", "length", 9))]
    assert cache.put_many(items) == 2
    assert cache.count() == 2
    got = cache.get_many(["k1", "k2", "missing"])
    assert got == dict(items)
    assert "missing" not in got
    cache.close()


def test_cache_put_nothing_and_get_nothing(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite3")
    assert cache.put_many([]) == 0
    assert cache.get_many([]) == {}
    assert cache.get_many(["unknown"]) == {}
    cache.close()


def test_cache_put_same_key_replaces(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite3")
    cache.put_many([("k", _raw("old"))])
    cache.put_many([("k", _raw("new"))])
    assert cache.count() == 1
    assert cache.get_many(["k"])["k"].text == "new"
    cache.close()


def test_cache_lookup_of_more_keys_than_one_batch(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite3")
    n = 2500
    cache.put_many((f"key-{i}", _raw(f"text {i}", tokens=i)) for i in range(n))
    assert cache.count() == n
    # Ask for all of them, interleaved with unknown keys and duplicates.
    wanted = [f"key-{i}" for i in range(n)] + [f"nope-{i}" for i in range(1000)] + ["key-0"]
    got = cache.get_many(wanted)
    assert len(got) == n
    assert got["key-0"].text == "text 0"
    assert got[f"key-{n - 1}"] == _raw(f"text {n - 1}", tokens=n - 1)
    assert not any(k.startswith("nope-") for k in got)
    cache.close()


def test_cache_keeps_cjk_and_emoji_text(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite3")
    text = "河流为什么会弯曲？🌊\nなぜ川は曲がるのか 👩‍🔬 한국어 \u0000tail"
    cache.put_many([("cjk", _raw(text))])
    assert cache.get_many(["cjk"])["cjk"].text == text
    cache.close()
    reopened = ResponseCache(tmp_path / "c.sqlite3")
    assert reopened.get_many(["cjk"])["cjk"].text == text
    reopened.close()


def test_two_handles_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    a = ResponseCache(path)
    b = ResponseCache(path)
    a.put_many([("from-a", _raw("A 你好"))])
    assert b.get_many(["from-a"]) == {"from-a": _raw("A 你好")}
    b.put_many([("from-b", _raw("B 🌊"))])
    assert a.get_many(["from-b"]) == {"from-b": _raw("B 🌊")}
    assert a.count() == b.count() == 2
    a.close()
    b.close()


def test_cache_is_a_plain_sqlite_file_that_persists(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    cache = ResponseCache(path)
    cache.put_many([("k", _raw("persisted"))])
    cache.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT key, text FROM completions").fetchall()
    assert rows == [("k", "persisted")]


# -- GenerationStats ---------------------------------------------------------------------------


def _completion(
    *,
    cached: bool,
    finish_reason: str = "stop",
    completion_tokens: int = 10,
    parse_error: str | None = None,
) -> Completion:
    return Completion(
        text="x",
        finish_reason=finish_reason,
        prompt_tokens=5,
        completion_tokens=completion_tokens,
        latency_s=0.1,
        model="m",
        engine="scripted",
        engine_version="0",
        seed=1,
        key="k",
        cached=cached,
        parse_error=parse_error,
    )


def test_generation_stats_counts_and_metadata() -> None:
    stats = GenerationStats()
    stats.add(_completion(cached=False, completion_tokens=30))
    stats.add(
        _completion(
            cached=False, finish_reason="length", completion_tokens=20, parse_error="truncated: ..."
        )
    )
    stats.add(_completion(cached=True, completion_tokens=100))
    stats.add(_completion(cached=True, parse_error="invalid_json: <root>: bad"))
    stats.generation_seconds = 2.0

    assert stats.tokens_per_second == pytest.approx(25.0)  # (30 + 20) / 2: cached not counted
    meta = stats.as_metadata()
    assert meta == {
        "requests": 4,
        "cache_hits": 2,
        "cache_misses": 2,
        "prompt_tokens": 20,
        "completion_tokens": 160,
        "tokens_per_second": 25.0,
        "parse_failures": 2,
        "truncated": 1,
        "finish_reasons": {"stop": 3, "length": 1},
    }
    # The metadata must be JSON-serializable plain data (Dagster metadata, logs).
    assert json.loads(json.dumps(meta)) == meta


def test_tokens_per_second_is_zero_without_generation_time() -> None:
    stats = GenerationStats()
    stats.add(_completion(cached=False, completion_tokens=30))
    assert stats.tokens_per_second == 0.0
    assert stats.as_metadata()["tokens_per_second"] == 0.0


def test_tokens_per_second_is_rounded_in_metadata() -> None:
    stats = GenerationStats()
    stats.add(_completion(cached=False, completion_tokens=10))
    stats.generation_seconds = 3.0
    assert stats.as_metadata()["tokens_per_second"] == 3.33


def test_finish_reasons_metadata_is_a_copy() -> None:
    stats = GenerationStats()
    stats.add(_completion(cached=False))
    meta = stats.as_metadata()
    meta["finish_reasons"]["stop"] = 99
    assert stats.finish_reasons == {"stop": 1}
