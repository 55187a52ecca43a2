"""The vLLM server stopped mid-run: the step fails with a message that names the server URL and
says what to do; after the server is back, a rerun completes and replays the saved work.

Stops and restarts the session's real `vllm serve` (one restart, ~1 min: cheaper than a second
server, which would need to load twice).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from dagster._utils.error import SerializableErrorInfo

from condor_dagster.core.llm import LLMRequest, SamplingParams
from condor_dagster.methods.condor.assets import knowledge_tree, raw_questions
from condor_dagster.resources.openai_server import LLMServerError, OpenAIServerResource
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.vllm_server_process import VLLMServerProcess

from .conftest import (
    TASKS_X_DIFFICULTIES,
    Deployment,
    check_parquet_files,
    read_partition,
    wait_until,
)

SAMPLES = 4
RUN_CONFIG = {
    "ops": {"condor__raw_questions": {"config": {"samples_per_task": SAMPLES, "max_tokens": 256}}}
}


def materialize_questions(
    deployment: Deployment, keys: list[str], llm: OpenAIServerResource
) -> dg.ExecuteInProcessResult:
    """One run of raw_questions over the partition range `keys`."""
    return dg.materialize(
        [knowledge_tree, raw_questions],
        selection=[raw_questions],
        instance=deployment.instance,
        resources={"llm": llm, "io_manager": ParquetIOManager(base_dir=str(deployment.assets_dir))},
        run_config=RUN_CONFIG,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
        raise_on_error=False,
    )


def error_chain(error: SerializableErrorInfo | None) -> str:
    """The messages of an error and of every error it was raised from."""
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause or error.context
    return "\n".join(messages)


def server_llm(
    deployment: Deployment, server: VLLMServerProcess, max_concurrency: int = 128
) -> OpenAIServerResource:
    # Frequent liveness checks: the test need not wait out the default 3 x 10 s.
    return OpenAIServerResource(
        base_url=server.base_url,
        cache_path=str(deployment.cache_path),
        health_check_interval_s=2,
        max_concurrency=max_concurrency,
    )


@pytest.mark.server
def test_server_stopped_mid_run_fails_step_with_clear_message_and_rerun_resumes(
    deployment: Deployment, vllm_server: VLLMServerProcess
) -> None:
    keys = deployment.grow_tree(["Pets", "Travel", "Finance", "Art"])
    total = len(keys) * 7 * SAMPLES
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = materialize_questions(
                deployment, keys, server_llm(deployment, vllm_server)
            )
        except BaseException as exc:  # reported below; the thread must not swallow it
            outcome["error"] = exc

    runner = threading.Thread(target=run, name="run-to-stop", daemon=True)
    server = vllm_server.process
    assert server is not None
    try:
        runner.start()
        wait_until(
            lambda: deployment.cache_count() > 0 or not runner.is_alive(),
            timeout_s=300,
            what="the first completions in the response cache",
            tail=vllm_server.log_tail,
        )
        assert runner.is_alive(), f"the run ended before the server was stopped: {outcome}"
        # What `kill PID` or a service manager's stop sends. vLLM then kills its engine but
        # keeps the in-flight requests' connections open; the resource must notice by itself.
        os.killpg(server.pid, signal.SIGTERM)
        runner.join(timeout=180)
        assert not runner.is_alive(), "the run did not give up after the server stopped"
    finally:
        vllm_server.stop()  # reaps the stopped server (or stops it if the test failed early)
        vllm_server.start(timeout_s=420)  # later tests share the server

    assert "error" not in outcome, outcome["error"]
    result: dg.ExecuteInProcessResult = outcome["result"]
    assert not result.success
    assert result.dagster_run.status == dg.DagsterRunStatus.FAILURE
    saved = deployment.cache_count()
    assert 0 < saved < total, (saved, total)

    (failure,) = deployment.instance.all_logs(
        result.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    )
    assert failure.dagster_event is not None
    # What the UI shows for the failed step: Dagster's wrapper, then the resource's error.
    message = error_chain(failure.dagster_event.step_failure_data.error)
    # vLLM 0.32 holds the in-flight requests open after SIGTERM, so the liveness check is what
    # notices ("stopped answering"); a server that resets them fails on retries instead.
    assert f"LLM server at {vllm_server.base_url} " in message
    assert f"{saved} of {total} completions finished and are saved" in message
    assert f"GET {vllm_server.base_url}/models" in message
    assert "restart it" in message and "rerun" in message
    assert f"generates only the other {total - saved}" in message
    # The failed step wrote nothing; the tree is intact.
    assert check_parquet_files(deployment.data) == {
        "assets/condor/knowledge_tree.parquet": len(keys)
    }

    rerun = materialize_questions(deployment, keys, server_llm(deployment, vllm_server))
    assert rerun.success
    events = rerun.asset_materializations_for_node("condor__raw_questions")
    assert sorted(str(e.partition) for e in events) == sorted(keys)
    for event in events:
        assert event.metadata["cache_hits"].value == saved
        assert event.metadata["cache_misses"].value == total - saved
    assert deployment.cache_count() == total

    for key in keys:
        lineage = read_partition(deployment, "raw_questions", key)["lineage"].struct
        assert lineage.field("finish_reason").is_in(["stop", "length"]).all(), (
            "a completion cut off by the server's shutdown was replayed as finished work"
        )
        assert (lineage.field("completion_tokens") > 0).all()
    rows = check_parquet_files(deployment.data)
    assert rows == {
        "assets/condor/knowledge_tree.parquet": len(keys),
        **{
            f"assets/condor/raw_questions/{key}.parquet": TASKS_X_DIFFICULTIES * SAMPLES
            for key in keys
        },
    }
    cached = pl.concat(
        read_partition(deployment, "raw_questions", key)["lineage"].struct.field("cached")
        for key in keys
    )
    # Each completion yields three question rows.
    assert cached.sum() == saved * 3


class HangingServer:
    """An OpenAI-compatible endpoint that accepts chat requests and never answers them, and
    answers GET /v1/models only `healthy_checks` times: what a stopped vLLM looks like to a
    client (engine gone, in-flight connections held open, no new connections served)."""

    def __init__(self, healthy_checks: int = 1) -> None:
        self.healthy_checks = healthy_checks
        self.chat_requests = 0
        self.release = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> HangingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if server.healthy_checks > 0:
                    server.healthy_checks -= 1
                    self._send(200, {"object": "list", "data": [{"id": "hanging-model"}]})
                else:
                    self._send(503, {"error": {"message": "engine is gone"}})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.chat_requests += 1
                server.release.wait(timeout=600)  # held open, like vLLM after SIGTERM
                self._send(500, {"error": {"message": "released at test end"}})

        return Handler


def test_batch_fails_soon_when_server_holds_requests_and_stops_answering(tmp_path: Path) -> None:
    requests = [
        LLMRequest.chat([{"role": "user", "content": f"q {i}"}], SamplingParams(max_tokens=8))
        for i in range(5)
    ]
    errors: list[BaseException] = []
    with HangingServer() as server:
        llm = OpenAIServerResource(
            base_url=server.base_url,
            cache_path=str(tmp_path / "cache.sqlite3"),
            request_timeout_s=600,  # without the liveness check the batch would hang this long
            health_check_interval_s=0.2,
        )

        def run() -> None:
            try:
                llm.generate(requests)
            except BaseException as exc:  # checked below
                errors.append(exc)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        runner.join(timeout=120)
        assert not runner.is_alive(), "the batch kept waiting on a server that stopped answering"
        assert server.chat_requests == 5
    (error,) = errors
    assert isinstance(error, LLMServerError), repr(error)
    message = str(error)
    assert f"LLM server at {server.base_url} stopped answering while requests were in flight" in (
        message
    )
    assert "GET /models failed 3 times in a row, last: HTTP 503" in message
    assert "0 of 5 completions finished" in message
