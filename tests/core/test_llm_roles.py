"""LLM resources by role and the memory budget of in-process engines (no engine starts: the
engine builder is replaced where get_engine runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from condor_dagster.resources import vllm_engine
from condor_dagster.resources.llm_roles import (
    LLM_ROLES,
    llm_resource_from_env,
    llm_resources_from_env,
    role_variable,
    roles_with,
    split_memory,
)
from condor_dagster.resources.openai_server import OpenAIServerResource
from condor_dagster.resources.scripted_llm import ScriptedLLMResource
from condor_dagster.resources.vllm_engine import (
    VLLMEngineResource,
    check_memory_budget,
    shutdown_engines,
)


def _model_dir(folder: Path) -> str:
    """A model directory the validator accepts (never loaded)."""
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


@pytest.fixture
def other_model(tmp_path: Path) -> str:
    return _model_dir(tmp_path / "other-model")


def _engine(resource: object) -> VLLMEngineResource:
    assert isinstance(resource, VLLMEngineResource)
    return resource


# -- roles ----------------------------------------------------------------------------------
def test_every_role_is_the_llm_object_by_default(tiny_model: str) -> None:
    for cpu in (True, False):
        roles = llm_resources_from_env({"CONDOR_MODEL": tiny_model}, cpu=cpu)
        assert list(roles) == list(LLM_ROLES)
        assert all(resource is roles["llm"] for resource in roles.values())
        # One engine with nothing set: exactly the resource definitions.py built before roles.
        assert roles["llm"] == VLLMEngineResource(
            model=tiny_model,
            max_model_len=4096,
            dtype="auto",
            enforce_eager=None,
            cpu_threads=None,
            cpu_inline_engine=True,
        )
        assert _engine(roles["llm"]).gpu_memory_utilization == 0.9
        assert _engine(roles["llm"]).cpu_kv_cache_gib is None


def test_label_server_override_keeps_the_engine_for_the_others(tiny_model: str) -> None:
    env = {
        "CONDOR_MODEL": tiny_model,
        "CONDOR_LLM_LABEL": "server",
        "CONDOR_LLM_LABEL_BASE_URL": "http://gpu-host:8000/v1/",
    }
    roles = llm_resources_from_env(env, cpu=True)
    label = roles["label"]
    # Built, never connected: the health check runs only at run start.
    assert isinstance(label, OpenAIServerResource)
    assert label.base_url == "http://gpu-host:8000/v1"
    assert label.model == tiny_model  # CONDOR_MODEL_LABEL unset: the llm role's model
    assert isinstance(roles["llm"], VLLMEngineResource)
    assert roles["score"] is roles["llm"] and roles["polish"] is roles["llm"]


def test_role_values_fall_back_to_the_llm_role(tiny_model: str, other_model: str) -> None:
    env = {
        "CONDOR_MODEL": tiny_model,
        "CONDOR_MAX_MODEL_LEN": "2048",
        "CONDOR_DTYPE": "float32",
        "CONDOR_ENFORCE_EAGER": "1",
        "CONDOR_MODEL_SCORE": other_model,
        "CONDOR_DTYPE_SCORE": "bfloat16",
    }
    score = _engine(llm_resource_from_env("score", env))
    assert (score.model, score.max_model_len, score.dtype, score.enforce_eager) == (
        other_model,
        2048,
        "bfloat16",
        True,
    )
    server = llm_resource_from_env(
        "polish",
        {"CONDOR_LLM": "server", "CONDOR_LLM_BASE_URL": "http://a:1/v1", "CONDOR_MODEL": "m"},
    )
    assert isinstance(server, OpenAIServerResource)
    assert (server.base_url, server.model) == ("http://a:1/v1", "m")


def test_role_variable_names() -> None:
    assert role_variable("CONDOR_LLM") == "CONDOR_LLM"
    assert role_variable("CONDOR_LLM", "label") == "CONDOR_LLM_LABEL"
    assert role_variable("CONDOR_LLM_BASE_URL", "label") == "CONDOR_LLM_LABEL_BASE_URL"
    assert role_variable("CONDOR_MODEL", "polish") == "CONDOR_MODEL_POLISH"
    assert role_variable("CONDOR_GPU_MEMORY_UTILIZATION", "score") == (
        "CONDOR_GPU_MEMORY_UTILIZATION_SCORE"
    )


def test_bad_values_name_the_variable(tiny_model: str) -> None:
    with pytest.raises(ValueError, match="CONDOR_LLM_SCORE must be 'engine' or 'server'"):
        llm_resources_from_env({"CONDOR_MODEL": tiny_model, "CONDOR_LLM_SCORE": "gpu"})
    with pytest.raises(ValueError, match="CONDOR_MAX_MODEL_LEN_LABEL must be a whole number"):
        llm_resource_from_env("label", {"CONDOR_MAX_MODEL_LEN_LABEL": "4k"})
    with pytest.raises(ValueError, match="CONDOR_ENFORCE_EAGER must be 1 or 0"):
        llm_resource_from_env("label", {"CONDOR_MODEL": tiny_model, "CONDOR_ENFORCE_EAGER": "x"})


def test_roles_sharing_settings_share_one_object(tiny_model: str, other_model: str) -> None:
    env = {"CONDOR_MODEL": tiny_model, "CONDOR_MODEL_SCORE": other_model}
    env["CONDOR_MODEL_POLISH"] = other_model
    roles = llm_resources_from_env(env, cpu=False)
    assert roles["score"] is roles["polish"] and roles["score"] is not roles["llm"]
    assert roles["label"] is roles["llm"]


def test_unknown_roles_are_rejected(tiny_model: str) -> None:
    default = ScriptedLLMResource()
    judge = ScriptedLLMResource(model_name="judge")
    roles = roles_with(default, score=judge)
    assert roles["score"] is judge
    assert all(roles[r] is default for r in LLM_ROLES if r != "score")
    with pytest.raises(ValueError, match=r"unknown LLM role.*judge.*llm, label, score, polish"):
        roles_with(default, judge=judge)
    with pytest.raises(ValueError, match="LLM role must be one of llm, label, score, polish"):
        llm_resource_from_env("judge", {"CONDOR_MODEL": tiny_model})


# -- splitting the budget -------------------------------------------------------------------
def test_two_engines_split_the_gpu_budget(
    tiny_model: str, other_model: str, tmp_path: Path
) -> None:
    env = {"CONDOR_MODEL": tiny_model, "CONDOR_MODEL_LABEL": other_model}
    roles = llm_resources_from_env(env, cpu=False)
    assert roles["label"] is not roles["llm"] and roles["score"] is roles["llm"]
    assert _engine(roles["llm"]).gpu_memory_utilization == 0.45
    assert _engine(roles["label"]).gpu_memory_utilization == 0.45
    roles = llm_resources_from_env({**env, "CONDOR_GPU_MEMORY_BUDGET": "0.8"}, cpu=False)
    assert {_engine(roles[r]).gpu_memory_utilization for r in ("llm", "label")} == {0.4}
    # An explicit setting is kept; the others split what it leaves.
    roles = llm_resources_from_env(
        {
            **env,
            "CONDOR_MODEL_SCORE": _model_dir(tmp_path / "third"),
            "CONDOR_GPU_MEMORY_UTILIZATION": "0.5",
        },
        cpu=False,
    )
    assert _engine(roles["llm"]).gpu_memory_utilization == 0.5
    assert _engine(roles["label"]).gpu_memory_utilization == 0.2
    assert _engine(roles["score"]).gpu_memory_utilization == 0.2


def test_two_engines_split_the_cpu_kv_cache_budget(tiny_model: str, other_model: str) -> None:
    env = {"CONDOR_MODEL": tiny_model, "CONDOR_MODEL_LABEL": other_model}

    def kv(extra: dict[str, str]) -> tuple[float | None, float | None]:
        roles = llm_resources_from_env({**env, **extra}, cpu=True)
        return _engine(roles["llm"]).cpu_kv_cache_gib, _engine(roles["label"]).cpu_kv_cache_gib

    assert kv({}) == (2.0, 2.0)  # 4 GiB split
    assert kv({"VLLM_CPU_KVCACHE_SPACE": "1"}) == (0.5, 0.5)
    assert kv({"CONDOR_CPU_KV_CACHE_BUDGET_GIB": "3", "VLLM_CPU_KVCACHE_SPACE": "1"}) == (1.5, 1.5)
    assert kv({"CONDOR_CPU_KV_CACHE_GIB_LABEL": "3"}) == (1.0, 3.0)
    # One engine keeps the environment's KV cache unless the budget is set.
    alone = llm_resources_from_env({"CONDOR_MODEL": tiny_model}, cpu=True)
    assert _engine(alone["llm"]).cpu_kv_cache_gib is None
    alone = llm_resources_from_env(
        {"CONDOR_MODEL": tiny_model, "CONDOR_CPU_KV_CACHE_BUDGET_GIB": "2"}, cpu=True
    )
    assert _engine(alone["llm"]).cpu_kv_cache_gib == 2.0


def test_explicit_settings_over_the_budget_raise(tiny_model: str, other_model: str) -> None:
    env = {
        "CONDOR_MODEL": tiny_model,
        "CONDOR_MODEL_LABEL": other_model,
        "CONDOR_GPU_MEMORY_UTILIZATION": "0.6",
        "CONDOR_GPU_MEMORY_UTILIZATION_LABEL": "0.5",
    }
    with pytest.raises(ValueError) as error:
        llm_resources_from_env(env, cpu=False)
    assert str(error.value) == (
        "in-process engines ask for 1.1 together (llm/score/polish "
        "(CONDOR_GPU_MEMORY_UTILIZATION): 0.6, label (CONDOR_GPU_MEMORY_UTILIZATION_LABEL): 0.5), "
        "over the GPU memory budget 0.9; lower them so they add up to at most 0.9, or raise "
        "CONDOR_GPU_MEMORY_BUDGET"
    )
    fits = llm_resources_from_env({**env, "CONDOR_GPU_MEMORY_UTILIZATION_LABEL": "0.3"}, cpu=False)
    assert _engine(fits["label"]).gpu_memory_utilization == 0.3
    del env["CONDOR_GPU_MEMORY_UTILIZATION_LABEL"]
    env["CONDOR_GPU_MEMORY_UTILIZATION"] = "0.9"
    with pytest.raises(ValueError, match="leaves nothing for label"):
        llm_resources_from_env(env, cpu=False)
    with pytest.raises(ValueError, match="CONDOR_GPU_MEMORY_UTILIZATION must be a number above 0"):
        llm_resources_from_env({**env, "CONDOR_GPU_MEMORY_UTILIZATION": "1.5"}, cpu=False)
    with pytest.raises(ValueError, match="CONDOR_CPU_KV_CACHE_BUDGET_GIB must be a number"):
        llm_resources_from_env({**env, "CONDOR_CPU_KV_CACHE_BUDGET_GIB": "lots"}, cpu=True)


def test_split_memory_cases() -> None:
    assert split_memory([("a", None), ("b", None), ("c", None)], 0.9, "fraction") == [0.3] * 3
    assert split_memory([("a", 0.5), ("b", None)], 0.9, "fraction") == [0.5, 0.4]
    assert split_memory([("a", 1.0), ("b", None), ("c", None)], 4.0, "GiB") == [1.0, 1.5, 1.5]
    with pytest.raises(ValueError, match=r"ask for 5 GiB together \(a: 3 GiB, b: 2 GiB\)"):
        split_memory([("a", 3.0), ("b", 2.0)], 4.0, "GiB")


# -- the process-wide guard -----------------------------------------------------------------
def test_check_memory_budget_cases() -> None:
    check_memory_budget({"a": 0.45}, "b", 0.45, 0.9, "fraction")  # exactly the budget
    check_memory_budget({"a": 0.3, "b": 0.3}, "c", 0.3, 0.9, "fraction")  # float sums
    check_memory_budget({}, "a", 0.9, 0.9, "fraction")
    with pytest.raises(ValueError) as error:
        check_memory_budget({"Qwen/Qwen2.5-7B-Instruct": 0.9}, "/models/x", 0.9, 0.9, "fraction")
    assert str(error.value) == (
        "in-process engines would use 1.8 of the GPU memory budget 0.9 "
        "(Qwen/Qwen2.5-7B-Instruct: 0.9, /models/x: 0.9); set gpu_memory_utilization per engine "
        "so they add up to at most 0.9, or raise CONDOR_GPU_MEMORY_BUDGET"
    )
    check_memory_budget({"a": 2.5}, "b", 1.5, 4.0, "GiB")
    with pytest.raises(ValueError) as error:
        check_memory_budget({"a": 3.0}, "b", 2.0, 4.0, "GiB")
    assert str(error.value) == (
        "in-process engines would use 5 GiB of the CPU KV cache budget 4 GiB (a: 3 GiB, "
        "b: 2 GiB); set cpu_kv_cache_gib per engine so they add up to at most 4 GiB, or raise "
        "CONDOR_CPU_KV_CACHE_BUDGET_GIB"
    )
    with pytest.raises(ValueError, match="unit must be one of"):
        check_memory_budget({}, "a", 1.0, 1.0, "MiB")


@pytest.fixture
def fake_builds(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """get_engine with an empty registry and a builder that records instead of loading."""
    builds: list[dict[str, Any]] = []

    def build(kwargs: dict[str, Any], env: dict[str, str]) -> object:
        space = vllm_engine.os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        builds.append({"kwargs": dict(kwargs), "kv_space": space})
        return object()

    monkeypatch.setattr(vllm_engine, "_ENGINES", {})
    monkeypatch.setattr(vllm_engine, "_LOADED", {})
    monkeypatch.setattr(vllm_engine, "_build_engine", build)
    monkeypatch.delenv("CONDOR_GPU_MEMORY_BUDGET", raising=False)
    monkeypatch.delenv("CONDOR_CPU_KV_CACHE_BUDGET_GIB", raising=False)
    return builds


def test_gpu_engines_in_one_process_fit_the_budget(
    fake_builds: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: str,
    other_model: str,
) -> None:
    monkeypatch.setattr(vllm_engine, "is_cpu_build", lambda: False)
    first = VLLMEngineResource(model=tiny_model)
    second = VLLMEngineResource(model=other_model)
    first.get_engine()
    first.get_engine()  # the same key: loaded once, counted once
    with pytest.raises(ValueError, match=r"would use 1.8 of the GPU memory budget 0.9 \("):
        second.get_engine()
    assert len(fake_builds) == 1
    assert shutdown_engines() == 1  # frees the budget
    second.get_engine()
    shutdown_engines()
    VLLMEngineResource(model=tiny_model, gpu_memory_utilization=0.45).get_engine()
    VLLMEngineResource(model=other_model, gpu_memory_utilization=0.45).get_engine()
    shutdown_engines()
    # One engine alone keeps any setting unless the budget is set.
    VLLMEngineResource(model=tiny_model, gpu_memory_utilization=0.95).get_engine()
    shutdown_engines()
    monkeypatch.setenv("CONDOR_GPU_MEMORY_BUDGET", "0.5")
    with pytest.raises(ValueError, match=r"0.95 of the GPU memory budget 0.5"):
        VLLMEngineResource(model=tiny_model, gpu_memory_utilization=0.95).get_engine()


def test_cpu_engines_fit_the_kv_cache_budget(
    fake_builds: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tiny_model: str,
    other_model: str,
) -> None:
    monkeypatch.setattr(vllm_engine, "is_cpu_build", lambda: True)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    # One engine with nothing set: today's arguments, the environment's KV cache.
    VLLMEngineResource(model=tiny_model, enforce_eager=True).get_engine()
    (alone,) = fake_builds
    assert "kv_cache_memory_bytes" not in alone["kwargs"]
    assert alone["kv_space"] == "1"
    shutdown_engines()

    monkeypatch.setenv("CONDOR_CPU_KV_CACHE_BUDGET_GIB", "2")
    VLLMEngineResource(model=tiny_model, cpu_kv_cache_gib=1.5).get_engine()
    # A fractional size goes through kv_cache_memory_bytes, without the variable that wins.
    assert fake_builds[-1]["kwargs"]["kv_cache_memory_bytes"] == int(1.5 * (1 << 30))
    assert fake_builds[-1]["kv_space"] is None
    assert vllm_engine.os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1"  # restored
    with pytest.raises(ValueError, match=r"would use 2.5 GiB of the CPU KV cache budget 2 GiB"):
        VLLMEngineResource(model=other_model, cpu_kv_cache_gib=1).get_engine()
    # Unset, an engine counts the environment's size (1 GiB): 2.5 again.
    with pytest.raises(ValueError, match=r"2.5 GiB"):
        VLLMEngineResource(model=other_model).get_engine()
    shutdown_engines()
    VLLMEngineResource(model=other_model, cpu_kv_cache_gib=1).get_engine()
    # A whole number of GiB is written as vLLM reads it (an int), only while building.
    assert "kv_cache_memory_bytes" not in fake_builds[-1]["kwargs"]
    assert fake_builds[-1]["kv_space"] == "1"
