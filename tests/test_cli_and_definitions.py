"""The `condor` command and the Dagster definitions, as a user meets them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_tiny_model_command_builds_a_loadable_checkpoint(tmp_path, capsys):
    from transformers import AutoConfig, AutoTokenizer

    from condor_dagster.cli import main

    out = tmp_path / "models" / "tiny"
    assert main(["tiny-model", str(out)]) == 0
    assert "noise" in capsys.readouterr().out

    config = AutoConfig.from_pretrained(out)
    assert config.architectures == ["LlamaForCausalLM"]
    assert config.head_dim == 64  # vLLM's CPU attention rejects 16
    tokenizer = AutoTokenizer.from_pretrained(out)
    # Byte-level BPE: any script round-trips, whatever the training corpus held.
    for text in ["人工智能与医疗", "emoji 🧭🐾", 'commas, slashes / and "quotes"', "Ελληνικά"]:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>"
    assert json.loads((out / "condor_tiny_model.json").read_text())["seed"] == 0
    # Built under a temporary name and renamed: nothing half-written is left beside it.
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_tiny_model_is_deterministic_per_seed(tmp_path):
    from condor_dagster.core.model_ref import model_fingerprint
    from condor_dagster.core.tiny_model import build_tiny_model

    a = build_tiny_model(tmp_path / "a", seed=1)
    b = build_tiny_model(tmp_path / "b", seed=1)
    c = build_tiny_model(tmp_path / "c", seed=2)
    assert model_fingerprint(str(a)) == model_fingerprint(str(b))
    assert model_fingerprint(str(a)) != model_fingerprint(str(c))


@pytest.mark.parametrize("head_dim", [16, 48])
def test_tiny_model_rejects_head_dims_vllm_cpu_cannot_run(tmp_path, head_dim):
    from condor_dagster.core.tiny_model import build_tiny_model

    with pytest.raises(ValueError, match=f"head_dim must be a multiple of 32.*got {head_dim}"):
        build_tiny_model(tmp_path / "x", head_dim=head_dim, hidden_size=2 * head_dim)


def _load_definitions(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from condor_dagster.definitions import defs\n"
        "defs.resolve_all_job_defs()\n"
        "print(type(defs.resources['llm']).__name__)\n"
        "print('vllm' in sys.modules, 'torch' in sys.modules)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_definitions_load_fast_without_importing_vllm_or_torch(tiny_model):
    done = _load_definitions({"CONDOR_MODEL": tiny_model, "CONDOR_LLM": "engine"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["VLLMEngineResource", "False", "False"]

    served = _load_definitions({"CONDOR_LLM": "server", "CONDOR_MODEL": ""})
    assert served.returncode == 0, served.stderr
    assert served.stdout.split()[0] == "OpenAIServerResource"


def test_definitions_name_a_missing_model_and_the_fix(tmp_path):
    done = _load_definitions({"CONDOR_MODEL": str(tmp_path / "nope"), "CONDOR_LLM": "engine"})
    assert done.returncode != 0
    assert f"model path '{tmp_path / 'nope'}' does not exist" in done.stderr
    assert "condor tiny-model" in done.stderr

    bad = _load_definitions({"CONDOR_LLM": "gpu-cluster"})
    assert "CONDOR_LLM must be 'engine' or 'server', got 'gpu-cluster'" in bad.stderr


def test_demo_refuses_an_unknown_method_before_installing_anything(tmp_path, capsys, monkeypatch):
    from condor_dagster.cli import main

    monkeypatch.setenv("CONDOR_HOME", str(tmp_path / "home"))
    assert main(["demo", "--methods", "condor,kun"]) == 2
    assert "unknown methods ['kun']; choose from condor, augcon" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_definitions_hold_augcon_jobs_and_its_corpus_sensor(tiny_model, monkeypatch):
    monkeypatch.setenv("CONDOR_MODEL", tiny_model)
    from condor_dagster.definitions import defs

    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"augcon_shards_job", "augcon_scorer_job", "condor_tags_job"} <= jobs
    sensor = defs.resolve_sensor_def("augcon_corpus_sensor")
    assert ["augcon", "sft_candidates"] in [
        k.path for k in sensor.asset_selection.resolve(defs.resolve_asset_graph())
    ]  # type: ignore[union-attr]
