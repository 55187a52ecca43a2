"""Dagster definitions: assets, jobs and resources chosen by environment.

Environment:
- CONDOR_LLM: "engine" (in-process vLLM, default) or "server" (OpenAI-compatible endpoint).
- CONDOR_MODEL: a known model name (`condor models`), a model directory or a Hugging Face id
  (default: SmolLM2-135M-Instruct under <CONDOR_HOME>/models, installed by `condor demo` or
  `condor models install smollm2-135m-instruct`).
- CONDOR_LLM_BASE_URL: server endpoint for CONDOR_LLM=server.
- CONDOR_MAX_MODEL_LEN, CONDOR_DTYPE, CONDOR_ENFORCE_EAGER (1/0): engine settings.
- CONDOR_CPU_THREADS, CONDOR_CPU_INLINE_ENGINE (1/0): CPU engine settings (VLLMEngineResource).
"""

from __future__ import annotations

import os

import dagster as dg

from condor_dagster.assets import CONDOR_ASSETS, TAG_ASSETS, knowledge_tree, sft_dataset
from condor_dagster.assets.llm_smoke import engine_smoke_test
from condor_dagster.assets.sensors import tags_sensor
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.llm import LLMResource
from condor_dagster.resources.model_store import DEFAULT_MODEL, resolve_model
from condor_dagster.resources.openai_server import OpenAIServerResource
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.vllm_engine import VLLMEngineResource


def default_model() -> str:
    """CONDOR_MODEL, a known name resolved to its directory (never installed while the
    definitions load: the engine's check names the install command when it is missing)."""
    return resolve_model(os.environ.get("CONDOR_MODEL") or DEFAULT_MODEL, install=False)


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
    threads = os.environ.get("CONDOR_CPU_THREADS")
    return VLLMEngineResource(
        model=default_model(),
        max_model_len=int(os.environ.get("CONDOR_MAX_MODEL_LEN", "4096")),
        dtype=os.environ.get("CONDOR_DTYPE", "auto"),  # type: ignore[arg-type]
        enforce_eager=_flag("CONDOR_ENFORCE_EAGER", default=None),
        cpu_threads=int(threads) if threads else None,
        cpu_inline_engine=_flag("CONDOR_CPU_INLINE_ENGINE", default=True) is not False,
    )


def _flag(name: str, *, default: bool | None) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValueError(f"{name} must be 1 or 0, got {value!r}")


engine_smoke_job = dg.define_asset_job(
    "engine_smoke_job",
    selection=[engine_smoke_test],
    description="Run a small batch through the configured LLM.",
)
knowledge_tree_job = dg.define_asset_job(
    "knowledge_tree_job",
    selection=[knowledge_tree],
    description="Grow the World Knowledge Tree; the tags sensor then adds its leaf tags.",
)
condor_tags_job = dg.define_asset_job(
    "condor_tags_job",
    selection=TAG_ASSETS,
    description="Questions, dedup, draft answers and refinement for the selected tags.",
)

sft_dataset_job = dg.define_asset_job(
    "sft_dataset_job",
    selection=[sft_dataset],
    description="Cross-tag dedup, filters and exports over every materialized tag partition.",
)


def resources_from_env() -> dict[str, object]:
    return {
        "llm": llm_resource_from_env(),
        "embeddings": SentenceTransformerEmbeddings(),
        "io_manager": ParquetIOManager(base_dir=os.environ.get("CONDOR_ASSETS_DIR") or None),
    }


# The in-process executor runs every step of a run in the run's own process, so the vLLM
# engine (a process-wide registry) loads once per run, not once per step as it would with the
# multiprocess executor; batching across partitions keeps the one engine busy instead.
defs = dg.Definitions(
    assets=[*CONDOR_ASSETS, engine_smoke_test],
    jobs=[knowledge_tree_job, condor_tags_job, sft_dataset_job, engine_smoke_job],
    sensors=[tags_sensor],
    resources=resources_from_env(),
    executor=dg.in_process_executor,
)
