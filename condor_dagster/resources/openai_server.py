"""Client for `vllm serve` fleets or any OpenAI-compatible chat endpoint.

An async pool of `max_concurrency` workers keeps the server's continuous batch full (the seed
scripts send one request at a time). Timeouts, connection errors, 429 and 5xx are retried with
exponential backoff; a request the server rejects (4xx) becomes a completion with
finish_reason "rejected", not a crashed batch. The API key is read from an environment variable
at call time: it is never part of the config, logs or metadata.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import dagster as dg
import httpx
from pydantic import Field, PrivateAttr, field_validator

from condor_dagster.core.llm import LLMRequest, RawCompletion
from condor_dagster.resources.llm import LLMBackendError, LLMResource, SinkFn

_RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
# Finish reasons of a request the server gave up on (vLLM: shutdown, engine error); retried.
_UNFINISHED_REASONS = {"abort", "error"}
# Consecutive failed liveness checks during a batch after which the server counts as stopped.
_HEALTH_MISSES = 3


class LLMServerError(LLMBackendError):
    """The server was unreachable or kept failing; names the URL."""


@dataclass
class ServerInfo:
    """What the health check learned about the server."""

    model: str
    root: str | None = None
    max_model_len: int | None = None
    version: str = "unknown"
    engine: str = "openai-compatible"


class OpenAIServerResource(LLMResource):
    """Generates through an OpenAI-compatible `/chat/completions` endpoint."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """Endpoint root, ending in /v1 (vllm serve's default port is 8000)."""
    model: str | None = None
    """Served model name; None takes the only model the server lists."""
    api_key_env_var: str = "VLLM_API_KEY"
    """Name of the environment variable holding the API key (read at call time, never logged)."""
    max_concurrency: int = Field(default=128, ge=1)
    """Requests in flight at once; high enough to keep a vLLM server's batch full."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    """Seconds before one request is abandoned and retried."""
    max_retries: int = Field(default=5, ge=0)
    """Retries per request on timeouts, connection errors, 429 and 5xx."""
    backoff_base_s: float = Field(default=0.5, gt=0)
    """First retry delay; doubles each attempt (with jitter) up to backoff_max_s."""
    backoff_max_s: float = Field(default=30.0, gt=0)
    """Longest delay between two attempts."""
    health_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds a health check (at start-up and during a batch) waits for the server."""
    health_check_interval_s: float = Field(default=10.0, gt=0)
    """While a batch runs, seconds between liveness checks (GET /models); a server that misses
    three in a row fails the batch instead of leaving it hanging until request_timeout_s."""

    _info: ServerInfo | None = PrivateAttr(default=None)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must start with http:// or https://, got {value!r}; "
                "e.g. http://127.0.0.1:8000/v1"
            )
        return value.rstrip("/")

    # -- lifecycle ---------------------------------------------------------------------------
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Fail at run start, before any step generates, if the server is not there.
        self.server_info()

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env_var)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _root_url(self) -> str:
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def server_info(self) -> ServerInfo:
        """Health check: the server answers /models and serves the configured model."""
        if self._info is not None:
            return self._info
        url = f"{self.base_url}/models"
        try:
            response = httpx.get(url, headers=self._headers(), timeout=self.health_timeout_s)
        except httpx.HTTPError as exc:
            raise LLMServerError(
                f"LLM server at {self.base_url} is unreachable ({type(exc).__name__}: {exc}); "
                "start one with `python -m vllm.entrypoints.openai.api_server --model MODEL "
                "--port PORT` or set base_url to a running OpenAI-compatible endpoint"
            ) from exc
        if response.status_code in (401, 403):
            raise LLMServerError(
                f"LLM server at {self.base_url} rejected the API key "
                f"(HTTP {response.status_code}); set the environment variable "
                f"{self.api_key_env_var} to a valid key"
            )
        if response.status_code != 200:
            raise LLMServerError(
                f"LLM server at {self.base_url} answered GET /models with HTTP "
                f"{response.status_code}; is base_url the endpoint root ending in /v1?"
            )
        served = response.json().get("data", [])
        names = [m.get("id") for m in served]
        if self.model is None and len(served) != 1:
            raise LLMServerError(
                f"LLM server at {self.base_url} serves {names}; set model to one of them"
            )
        card = (
            served[0]
            if self.model is None
            else next((m for m in served if m.get("id") == self.model), None)
        )
        if card is None:
            raise LLMServerError(
                f"model {self.model!r} is not served at {self.base_url}; it serves {names}"
            )
        info = ServerInfo(
            model=card["id"], root=card.get("root"), max_model_len=card.get("max_model_len")
        )
        try:  # vLLM answers /version at the server root; other servers may not.
            version = httpx.get(
                f"{self._root_url()}/version",
                headers=self._headers(),
                timeout=self.health_timeout_s,
            )
            if version.status_code == 200 and "version" in version.json():
                info.version = str(version.json()["version"])
                info.engine = "vllm-server"
        except (httpx.HTTPError, ValueError):
            pass
        self._info = info
        return info

    # -- LLMResource -------------------------------------------------------------------------
    def engine_identity(self) -> dict[str, Any]:
        info = self.server_info()
        return {
            "engine": info.engine,
            "model": info.model,
            "root": info.root,
            "engine_version": info.version,
        }

    def engine_info(self) -> tuple[str, str, str]:
        info = self.server_info()
        return info.model, info.engine, info.version

    def prepare(self) -> None:
        self.server_info()

    def context_length(self) -> int | None:
        return self.server_info().max_model_len

    def _body(self, request: LLMRequest, seed: int) -> dict[str, Any]:
        s = request.sampling
        body: dict[str, Any] = {
            "model": self.server_info().model,
            "messages": request.messages_as_dicts(),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "seed": seed,
        }
        # vLLM extensions; left out at their neutral values so plain OpenAI endpoints accept it.
        if s.top_k:
            body["top_k"] = s.top_k
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = s.repetition_penalty
        if s.stop:
            body["stop"] = list(s.stop)
        schema = request.json_schema()
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema.__name__, "schema": schema},  # type: ignore[union-attr]
            }
        return body

    def _generate_uncached(
        self, requests: Sequence[LLMRequest], seeds: Sequence[int], sink: SinkFn
    ) -> None:
        bodies = [self._body(r, s) for r, s in zip(requests, seeds, strict=True)]
        _run_sync(self._generate_async(bodies, sink))

    async def _generate_async(self, bodies: list[dict[str, Any]], sink: SinkFn) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(bodies)):
            queue.put_nowait(i)
        done = 0
        # aiohttp, not httpx: httpx's async connection pool serialises requests at this
        # concurrency (encode/httpx#3215). Measured against vllm serve here with 128 in flight:
        # 13-21 requests/s through one httpx.AsyncClient, ~110 through aiohttp; the requests
        # waited in the client's pool, not in the server (BENCHMARKS.md).
        connector = aiohttp.TCPConnector(limit=self.max_concurrency, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=self.request_timeout_s),
        ) as client:

            async def worker() -> None:
                nonlocal done
                while True:
                    try:
                        i = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    sink(i, await self._complete(client, bodies[i]))
                    done += 1

            workers = [
                asyncio.create_task(worker()) for _ in range(min(self.max_concurrency, len(bodies)))
            ]
            all_done = asyncio.gather(*workers)
            watchdog = asyncio.create_task(self._watch_server())
            racing: set[asyncio.Future[Any]] = {all_done, watchdog}
            try:
                finished, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()  # the first worker error, or the watchdog's
            except LLMServerError as exc:
                raise LLMServerError(
                    f"{exc}. {done} of {len(bodies)} completions finished and are saved in the "
                    f"response cache. Check that the server is up (GET {self.base_url}/models "
                    "must answer) and restart it if it stopped, then rerun: the rerun replays "
                    f"the saved completions and generates only the other {len(bodies) - done}"
                ) from exc
            finally:
                for task in [*workers, watchdog]:
                    task.cancel()
                await asyncio.gather(all_done, watchdog, return_exceptions=True)

    async def _watch_server(self) -> None:
        """Raise once the server stops answering GET /models while requests are in flight.

        A vLLM server that is stopped (SIGTERM) kills its engine but keeps the connections of
        in-flight requests open, waiting for them to close: without this check a batch would
        hang until request_timeout_s. Runs on its own connection, so a full pool cannot delay it.
        """
        misses = 0
        async with aiohttp.ClientSession(
            headers=self._headers(), timeout=aiohttp.ClientTimeout(total=self.health_timeout_s)
        ) as probe:
            while True:
                await asyncio.sleep(self.health_check_interval_s)
                problem: str | None
                try:
                    async with probe.get(f"{self.base_url}/models") as response:
                        await response.read()
                        ok = response.status == 200
                        problem = None if ok else f"HTTP {response.status}"
                except (TimeoutError, aiohttp.ClientError) as exc:
                    problem = _describe(exc)
                misses = 0 if problem is None else misses + 1
                if misses >= _HEALTH_MISSES:
                    raise LLMServerError(
                        f"LLM server at {self.base_url} stopped answering while requests were "
                        f"in flight (GET /models failed {misses} times in a row, last: {problem})"
                    )

    async def _complete(self, client: aiohttp.ClientSession, body: dict[str, Any]) -> RawCompletion:
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        while True:
            began = time.perf_counter()
            problem: str
            try:
                async with client.post(url, json=body) as response:
                    status = response.status
                    payload = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                problem = _describe(exc)
            else:
                if status == 200:
                    data = json.loads(payload)
                    choice = data["choices"][0]
                    usage = data.get("usage") or {}
                    reason = choice.get("finish_reason") or "unknown"
                    if reason not in _UNFINISHED_REASONS:
                        return RawCompletion(
                            text=choice["message"].get("content") or "",
                            finish_reason=reason,
                            prompt_tokens=int(usage.get("prompt_tokens", 0)),
                            completion_tokens=int(usage.get("completion_tokens", 0)),
                            latency_s=time.perf_counter() - began,
                        )
                    # vLLM aborts in-flight requests when it shuts down: not a result.
                    problem = f"HTTP 200 with finish_reason {reason!r}"
                elif status not in _RETRYABLE_STATUS:
                    # The server refused this request (too long, bad schema): a data problem.
                    text = payload.decode("utf-8", errors="replace")
                    return RawCompletion(
                        text=f"HTTP {status}: {text[:500]}",
                        finish_reason="rejected",
                        prompt_tokens=0,
                        completion_tokens=0,
                        latency_s=time.perf_counter() - began,
                    )
                else:
                    problem = f"HTTP {status}"
            attempt += 1
            if attempt > self.max_retries:
                raise LLMServerError(
                    f"LLM server at {self.base_url} failed {attempt} attempts of one request "
                    f"(last: {problem})"
                )
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))


def _describe(exc: BaseException) -> str:
    # aiohttp's timeouts carry no message.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _run_sync(coro: Any) -> Any:
    """Run a coroutine from sync code, also when the caller already runs an event loop
    (notebooks): then it runs on a private thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name="condor-llm-client")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
