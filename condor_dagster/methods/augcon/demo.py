"""AugCon's part of `condor demo`: a few pages of the Debian Administrator's Handbook (en-US
and zh-CN) through the whole method, as the sensor and a backfill would run it.

Three runs on the one in-process engine: the shards' documents, chunks and trees; then the
query scorer and the answer demos (trained once over every shard); then the filter, dedup,
grounded answers and candidates of every shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from condor_dagster.methods.augcon.definitions import augcon_sensor
from condor_dagster.methods.corpus.demo import install_demo_corpus
from condor_dagster.methods.corpus.resource import CorpusResource
from condor_dagster.methods.corpus.sensors import sync_corpus

# Small enough for 2 CPU cores in a couple of minutes, large enough for every stage to have
# real work: two chunks a page, trees two levels deep, short completions.
DEMO_CONFIG: dict[str, dict[str, Any]] = {
    "chunks": {"max_chunks_per_document": 2},
    "context_tree": {"max_depth": 2, "max_passes": 3, "max_tokens": 384},
    "scorer_triplets": {"per_type": 6, "draws": 3, "max_tokens": 128},
    "query_scorer": {"epochs": 2},
    "answer_demos": {"max_tokens": 160},
    "grounded_answers": {"max_tokens": 192},
}
TREE_STAGES = ("corpus/documents", "augcon/chunks", "augcon/context_tree")
SHARED_STAGES = ("augcon/scorer_triplets", "augcon/query_scorer", "augcon/answer_demos")
REST_STAGES = (
    "augcon/filtered_questions",
    "augcon/deduplicated_questions",
    "augcon/grounded_answers",
    "augcon/sft_candidates",
)


def demo_run_config(stages: tuple[str, ...]) -> dict[str, Any]:
    ops = {}
    for stage in stages:
        name = stage.split("/")[-1]
        if stage.startswith("augcon/") and name in DEMO_CONFIG:
            ops[stage.replace("/", "__")] = {"config": DEMO_CONFIG[name]}
    return {"ops": ops}


def install_corpus(corpus_dir: Path) -> list[Path]:
    """The demo's handbook pages under `corpus_dir` (kept when already there)."""
    return install_demo_corpus(corpus_dir)


def run_augcon_demo(
    defs: dg.Definitions, instance: dg.DagsterInstance, corpus: CorpusResource
) -> list[dg.ExecuteInProcessResult]:
    """The three runs, stopping at the first that fails (its result is the last returned)."""
    sync_corpus(instance, corpus, augcon_sensor)  # what the sensor does under the daemon
    keys = sorted(instance.get_dynamic_partitions("corpus_shards"))
    tags = {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }
    shards_job = defs.resolve_job_def("augcon_shards_job")
    results = []
    for stages, job, run_tags in (
        (TREE_STAGES, shards_job, tags),
        (SHARED_STAGES, defs.resolve_job_def("augcon_scorer_job"), None),
        (REST_STAGES, shards_job, tags),
    ):
        result = job.execute_in_process(
            run_config=demo_run_config(stages),
            instance=instance,
            tags=run_tags,
            asset_selection=[dg.AssetKey(s.split("/")) for s in stages],
            raise_on_error=False,
        )
        results.append(result)
        if not result.success:
            break
    return results
