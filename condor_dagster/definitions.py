"""Dagster definitions: assets, jobs and resources chosen by environment.

Environment:
- CONDOR_LLM: "engine" (in-process vLLM, default) or "server" (OpenAI-compatible endpoint).
- CONDOR_MODEL: model directory or Hugging Face id (default: the tiny model under
  <CONDOR_HOME>/models/tiny, built by `condor tiny-model` or `condor demo`).
- CONDOR_LLM_BASE_URL: server endpoint for CONDOR_LLM=server.
- CONDOR_MAX_MODEL_LEN, CONDOR_DTYPE: engine settings.
"""

from __future__ import annotations

import os

import dagster as dg

from condor_dagster.assets.llm_smoke import engine_smoke_test
from condor_dagster.core.paths import models_dir
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.llm import LLMResource
from condor_dagster.resources.openai_server import OpenAIServerResource
from condor_dagster.resources.vllm_engine import VLLMEngineResource


def default_model() -> str:
    return os.environ.get("CONDOR_MODEL") or str(models_dir() / "tiny")


def llm_resource_from_env() -> LLMResource:
    """The LLM resource this deployment uses, from environment variables."""
    kind = os.environ.get("CONDOR_LLM", "engine")
    if kind == "server":
        return OpenAIServerResource(
            base_url=os.environ.get("CONDOR_LLM_BASE_URL", "http://127.0.0.1:8000/v1"),
            model=os.environ.get("CONDOR_MODEL") or None,
        )
    if kind != "engine":
        raise ValueError(f"CONDOR_LLM must be 'engine' or 'server', got {kind!r}")
    return VLLMEngineResource(
        model=default_model(),
        max_model_len=int(os.environ.get("CONDOR_MAX_MODEL_LEN", "4096")),
        dtype=os.environ.get("CONDOR_DTYPE", "auto"),  # type: ignore[arg-type]
    )


engine_smoke_job = dg.define_asset_job(
    "engine_smoke_job",
    selection=[engine_smoke_test],
    description="Run a small batch through the configured LLM (the demo until Condor lands).",
)

defs = dg.Definitions(
    assets=[engine_smoke_test],
    jobs=[engine_smoke_job],
    resources={"llm": llm_resource_from_env(), "embeddings": SentenceTransformerEmbeddings()},
)
