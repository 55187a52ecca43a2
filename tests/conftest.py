"""Session-wide fixtures: the tiny model, one in-process vLLM engine, one vLLM server.

Heavy things start once per test session and only when a test asks for them. Environment is
pinned before anything imports vLLM: bounded CPU KV cache, no hub access, data under tmp.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Engine settings shared by the in-process engine and the server, so both serve the same model.
MAX_MODEL_LEN = 1024


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep every test's data, cache and Dagster instance out of the project folder."""
    home = tmp_path_factory.mktemp("condor_home")
    old = {k: os.environ.get(k) for k in ("CONDOR_HOME", "CONDOR_DATA_DIR")}
    os.environ["CONDOR_HOME"] = str(home)
    os.environ["CONDOR_DATA_DIR"] = str(home / "data")
    yield home
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def _stop_engines_at_exit() -> Iterator[None]:
    """Shut the in-process engine down while pytest's output streams are still open."""
    yield
    from condor_dagster.resources.vllm_engine import shutdown_engines

    shutdown_engines()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The offline random-weight Llama model, built once per session."""
    from condor_dagster.core.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture(scope="session")
def engine_settings(tiny_model: str) -> dict[str, object]:
    """Config of the one in-process engine; resources built from it share the loaded engine."""
    return {"model": tiny_model, "max_model_len": MAX_MODEL_LEN, "enforce_eager": True}


@pytest.fixture(scope="session")
def vllm_server(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real `vllm serve` (OpenAI-compatible) on 127.0.0.1 with the tiny model."""
    from condor_dagster.resources.vllm_server_process import VLLMServerProcess

    log = tmp_path_factory.mktemp("server") / "vllm-server.log"
    server = VLLMServerProcess(
        tiny_model, max_model_len=MAX_MODEL_LEN, extra_args=["--enforce-eager"], log_path=log
    )
    server.start(timeout_s=420)
    yield server
    server.stop()


# ---- SmolLM2-135M-Instruct: the real model, installed once per session ------------------------
SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2_install(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """`condor models install` from a clean CONDOR_HOME, SIGKILLed once mid-conversion, then
    run again to the end (what a user whose first install was interrupted does)."""
    from condor_dagster.resources.model_store import install_model

    root = tmp_path_factory.mktemp("fresh_home") / "models"
    facts = kill_mid_install(root)
    path = install_model(SMOLLM2, root=root)
    return {**facts, "root": str(root), "path": str(path)}


@pytest.fixture(scope="session")
def smollm2_model(smollm2_install: dict[str, object]) -> str:
    return str(smollm2_install["path"])


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_model: str, tmp_path_factory: pytest.TempPathFactory) -> object:
    """The one SmolLM2 engine of the session (in process, as the demo runs it)."""
    from condor_dagster.resources.vllm_engine import VLLMEngineResource

    cache = tmp_path_factory.mktemp("smollm2_cache") / "cache.sqlite3"
    return VLLMEngineResource(
        model=smollm2_model, max_model_len=2048, enforce_eager=True, cache_path=str(cache)
    )


def kill_mid_install(root: Path, timeout_s: float = 240.0) -> dict[str, object]:
    """Start `condor models install` in a child, SIGKILL it while its work directory exists
    (the conversion under way), and report what is left."""
    env = {**os.environ, "CONDOR_HOME": str(root.parent)}
    child = subprocess.Popen(
        [str(Path(sys.executable).with_name("condor")), "models", "install", SMOLLM2],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            works = list(root.glob(f".{SMOLLM2}.*.tmp")) if root.is_dir() else []
            # Weights being written: the latest point at which a kill can leave half a model.
            if any(any(w.iterdir()) for w in works):
                break
            if child.poll() is not None:
                raise AssertionError("the install finished before it could be killed")
            time.sleep(0.02)
        else:
            raise AssertionError(f"no work directory appeared under {root} in {timeout_s}s")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    return {
        "target_after_kill": (root / SMOLLM2).exists(),
        "work_dirs_after_kill": [p.name for p in root.glob(f".{SMOLLM2}.*.tmp")],
    }
