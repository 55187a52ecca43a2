"""pipeline_fixed_overhead_s and pipeline_overhead_ms_per_request: materializing
condor/draft_answers for K tag partitions in one run vs the raw engine on the same prompts,
engine already loaded.

Two sizes (K tags x q1 and x q2 questions) give overhead(n) = pipeline(n) - raw(n) at two
request counts n1 < n2: the slope is the per-request cost, the intercept the run's fixed cost
with a warm engine. What a fresh run process pays on top (interpreter start and imports, engine
load) is timed separately and added to the fixed part.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg

from bench.core import Context, Result, timed
from bench.services import TASKS, TOPICS, raw_chat
from condor_dagster.core.answers import answer_jobs
from condor_dagster.core.dedup_frame import DedupRow
from condor_dagster.core.llm import SamplingParams
from condor_dagster.core.rows import content_id, rows_to_frame
from condor_dagster.core.storage import AssetStore
from condor_dagster.core.tag_ids import node_id
from condor_dagster.methods.condor.assets import (
    CONDOR_ASSETS,
    deduplicated_questions,
    draft_answers,
)
from condor_dagster.methods.condor.records import METHOD, CondorOrigin
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.parquet_io import ParquetIOManager

TEMPERATURE = 0.7  # DraftAnswersConfig's default
# The op of condor/draft_answers, as run config names it.
DRAFT_OP = "__".join(draft_answers.key.path)


def write_questions(assets_dir: Path, tags: int, per_tag: int, size: str) -> list[str]:
    """condor/deduplicated_questions partitions (every question kept), as the IO manager
    stores them."""
    store = AssetStore(str(assets_dir))
    keys = []
    for t in range(tags):
        path = ["Bench", f"Domain {t}", f"Leaf {t} {size}"]
        tag = node_id(path)
        keys.append(tag)
        rows = []
        for q in range(per_tag):
            text = f"{TASKS[q % len(TASKS)]} {TOPICS[(t + q) % len(TOPICS)]} (tag {t}, q {q})?"
            origin = CondorOrigin(
                tag_path=" > ".join(path),
                task="domain_knowledge_qa",
                difficulty=("easy", "medium", "hard")[q % 3],
            )
            rows.append(
                DedupRow(
                    id=content_id("q", tag, q, size),
                    parent_id=tag,
                    method=METHOD,
                    partition_key=tag,
                    language="en",
                    origin=origin.model_dump(),
                    text=text,
                    kept=True,
                    drop_reason=None,
                    duplicate_of=None,
                    similarity=None,
                    embedding=None,
                    embedding_model="none",
                )
            )
        store.write(
            deduplicated_questions.key.path, tag, rows_to_frame(rows, DedupRow, origin=CondorOrigin)
        )
    return sorted(keys)


def same_requests(assets_dir: Path, keys: list[str], max_tokens: int) -> list[Any]:
    """The requests draft_answers sends for these partitions, built the way it builds them."""
    store = AssetStore(str(assets_dir))
    sampling = SamplingParams(temperature=TEMPERATURE, max_tokens=max_tokens)
    return [
        job.request
        for key in keys
        for job in answer_jobs(store.read(deduplicated_questions.key.path, key), sampling)
    ]


def import_seconds() -> float:
    """A fresh interpreter importing what a run process imports before its first request."""
    code = "import condor_dagster.definitions, vllm"
    return timed(lambda: subprocess.run([sys.executable, "-c", code], check=True))


def run(ctx: Context) -> dict[str, Result]:
    services = ctx.services
    sizes = ctx.sizes
    max_tokens = sizes.chat_max_tokens
    assets_dir = ctx.workdir / "pipeline-assets"
    instance = dg.DagsterInstance.ephemeral()
    llm = services.raw_engine()
    cases = []
    for size, per_tag in zip(("small", "large"), sizes.pipeline_questions, strict=True):
        keys = write_questions(assets_dir, sizes.pipeline_tags, per_tag, size)
        instance.add_dynamic_partitions("tags", keys)
        cases.append((keys, same_requests(assets_dir, keys, max_tokens)))

    def materialize(keys: list[str]) -> float:
        resources = {
            "llm": services.engine_resource(ctx),
            "embeddings": SentenceTransformerEmbeddings(),
            "io_manager": ParquetIOManager(base_dir=str(assets_dir)),
        }

        def go() -> None:
            result = dg.materialize(
                CONDOR_ASSETS,
                selection=[draft_answers],
                resources=resources,
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": keys[0],
                    "dagster/asset_partition_range_end": keys[-1],
                },
                run_config={
                    "ops": {DRAFT_OP: {"config": {"max_tokens": max_tokens}}},
                    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                },
            )
            assert result.success

        return timed(go)

    n_small, n_large = (len(requests) for _, requests in cases)
    ctx.log(
        f"pipeline: warm-up, then {ctx.reps} x draft_answers over {sizes.pipeline_tags} tags "
        f"({n_small} and {n_large} requests) vs raw engine"
    )
    materialize(cases[0][0])
    raw_chat(llm, cases[0][1])
    per_request_ms, intercept_s, runs = [], [], []
    for _ in range(ctx.reps):
        overheads = []
        row = {}
        for (keys, requests), name in zip(cases, ("small", "large"), strict=True):
            pipeline_s = materialize(keys)
            began = time.perf_counter()
            raw_chat(llm, requests)
            raw_s = time.perf_counter() - began
            overheads.append(pipeline_s - raw_s)
            row[name] = {"pipeline_s": pipeline_s, "raw_s": raw_s}
        slope = (overheads[1] - overheads[0]) / (n_large - n_small)
        per_request_ms.append(slope * 1000)
        intercept_s.append(overheads[0] - slope * n_small)
        runs.append(row)
    imports = [import_seconds() for _ in range(ctx.reps)]
    fixed = [i + s + services.engine_load_s for i, s in zip(intercept_s, imports, strict=True)]
    return {
        "pipeline_fixed_overhead_s": Result(
            fixed,
            note=(
                f"engine load {services.engine_load_s:.0f} s + imports {_m(imports):.1f} s + "
                f"run start/IO {_m(intercept_s):.2f} s"
            ),
            detail={
                "engine_load_s": services.engine_load_s,
                "imports_s": imports,
                "run_fixed_s_engine_warm": intercept_s,
            },
        ),
        "pipeline_overhead_ms_per_request": Result(
            per_request_ms,
            note=(
                f"draft_answers over {sizes.pipeline_tags} tags, {n_small} vs {n_large} "
                f"requests, max_tokens {max_tokens}"
            ),
            detail={
                "tags": sizes.pipeline_tags,
                "requests": [n_small, n_large],
                "max_tokens": max_tokens,
                "runs": runs,
            },
        ),
    }


def _m(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
