"""Dagster definitions: each method's definitions merged with the shared ones (sft_dataset,
the engine smoke test) and the resources chosen by environment.

Environment:
- CONDOR_LLM: "engine" (in-process vLLM, default) or "server" (OpenAI-compatible endpoint).
- CONDOR_MODEL: a known model name (`condor models`), a model directory or a Hugging Face id
  (default: SmolLM2-135M-Instruct under <CONDOR_HOME>/models, installed by `condor demo` or
  `condor models install smollm2-135m-instruct`).
- CONDOR_LLM_BASE_URL: server endpoint for CONDOR_LLM=server.
- CONDOR_MAX_MODEL_LEN, CONDOR_DTYPE, CONDOR_ENFORCE_EAGER (1/0): engine settings.
- CONDOR_CPU_THREADS, CONDOR_CPU_INLINE_ENGINE (1/0): CPU engine settings (VLLMEngineResource).
- CONDOR_LLM_<ROLE>, CONDOR_MODEL_<ROLE>, ...: a role (label, score, polish) with its own
  resource (resources/llm_roles.py); every role is the one `llm` resource otherwise.
"""

from __future__ import annotations

import os

import dagster as dg

from condor_dagster.methods.augcon import definitions as augcon
from condor_dagster.methods.condor import definitions as condor
from condor_dagster.methods.corpus.resource import CorpusResource
from condor_dagster.methods.dataset import sft_dataset
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.llm_roles import llm_resources_from_env
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.query_scorer import QueryScorerResource
from condor_dagster.stages.llm_smoke import engine_smoke_test

engine_smoke_job = dg.define_asset_job(
    "engine_smoke_job",
    selection=[engine_smoke_test],
    description="Run a small batch through the configured LLM.",
)
sft_dataset_job = dg.define_asset_job(
    "sft_dataset_job",
    selection=[sft_dataset],
    description="Cross-method dedup, filters and exports over every materialized candidate.",
)


def resources_from_env() -> dict[str, object]:
    """The LLM of every role (one engine unless a role names its own), embeddings, the
    corpus, AugCon's query scorer, storage."""
    return {
        **llm_resources_from_env(),
        "embeddings": SentenceTransformerEmbeddings(),
        "corpus": CorpusResource(),
        "query_scorer": QueryScorerResource(),
        "io_manager": ParquetIOManager(base_dir=os.environ.get("CONDOR_ASSETS_DIR") or None),
    }


def shared_definitions() -> dg.Definitions:
    """The stages over every method (sft_dataset) and the engine smoke test."""
    return dg.Definitions(
        assets=[sft_dataset, engine_smoke_test],
        jobs=[sft_dataset_job, engine_smoke_job],
    )


# The in-process executor runs every step of a run in the run's own process, so the vLLM
# engine (a process-wide registry) loads once per run, not once per step as it would with the
# multiprocess executor; batching across partitions keeps the one engine busy instead.
defs = dg.Definitions.merge(
    condor.defs,
    augcon.defs,
    shared_definitions(),
    dg.Definitions(resources=resources_from_env(), executor=dg.in_process_executor),
)
