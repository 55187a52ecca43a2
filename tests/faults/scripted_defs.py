"""Definitions for run workers of the fault tests that need controlled text: the Condor assets
with a scripted LLM whose text names the writer (FAULT_WRITER), so a test can tell whose output
a file holds. Loaded by `dagster job execute -f`; everything else comes from the environment
like the project's own definitions (CONDOR_DATA_DIR, DAGSTER_HOME).
"""

import os

import dagster as dg

from condor_dagster.methods.condor.assets import CONDOR_ASSETS, TAG_ASSETS
from condor_dagster.methods.condor.partitions import tags_partitions
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.scripted_llm import ScriptedLLMResource, ScriptRule

WRITER = os.environ.get("FAULT_WRITER", "a")

llm = ScriptedLLMResource(
    model_name=f"scripted-{WRITER}",
    rules=[
        ScriptRule(
            pattern="three questions",
            response=f'{{"easy": "Writer {WRITER}: which tool suits task {{seed}}?", '
            f'"medium": "Writer {WRITER}: how would you plan project {{seed}}?", '
            f'"hard": "Writer {WRITER}: why does approach {{seed}} fail under load?"}}',
        )
    ],
    rendezvous_dir=os.environ.get("FAULT_RENDEZVOUS_DIR") or None,
    rendezvous_parties=int(os.environ.get("FAULT_RENDEZVOUS_PARTIES", "2")),
)

defs = dg.Definitions(
    assets=CONDOR_ASSETS,
    jobs=[
        dg.define_asset_job("condor_tags_job", selection=TAG_ASSETS, partitions_def=tags_partitions)
    ],
    resources={
        "llm": llm,
        "embeddings": SentenceTransformerEmbeddings(),
        "io_manager": ParquetIOManager(),
    },
    executor=dg.in_process_executor,
)
