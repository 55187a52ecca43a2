"""export_200k_peak_rss_mb: peak memory of materializing sft_dataset over 200,000 synthetic
samples (questions, each with a draft and a refined answer), measured in a child process (so
nothing the bench itself holds is counted).

The parent writes what the Condor assets sft_dataset reads would have stored, as the Parquet IO
manager lays it out (`AssetStore`): condor/knowledge_tree, and per tag partition
condor/deduplicated_questions (every question kept, with its embedding) and
condor/sft_candidates (two rows per question: variant "refine", the refined answer with one
critique round, and variant "void", its draft), the candidates built by Condor's own
`condor_candidates` from synthetic refined_answers and draft_answers frames of the row contract.
The child materializes sft_dataset through Dagster on an ephemeral instance and reports its own
peak RSS. (condor/refine_quality is left unmaterialized: sft_dataset skips missing partitions.)
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.core import Context, Result
from bench.data import synthetic_embeddings
from condor_dagster.core.answers import DraftAnswerRow
from condor_dagster.core.dedup_frame import DedupRow
from condor_dagster.core.refine import RefinedAnswerRow, RefineRound
from condor_dagster.core.rows import Lineage, rows_to_frame
from condor_dagster.core.storage import AssetStore
from condor_dagster.methods.condor.candidates import VARIANTS, condor_candidates
from condor_dagster.methods.condor.records import METHOD, CondorOrigin, KnowledgeTreeRow
from condor_dagster.methods.condor.taxonomy import TreeNode

ROWS_PER_TAG = 1000
# Typical lengths (characters) of a real model's output: ~300-token answers.
ANSWER_CHARS = 1200
WORDS = "the of a to in and is for that with on as be by this are or it from at an".split()  # noqa: SIM905
# Where sft_dataset's inputs live in the store (asset key paths).
KNOWLEDGE_TREE = [METHOD, "knowledge_tree"]
DEDUPLICATED = [METHOD, "deduplicated_questions"]
CANDIDATES = [METHOD, "sft_candidates"]


def _lineage(prompt: str) -> Lineage:
    return Lineage(
        prompt_name=f"{prompt}/en",
        prompt_sha="0" * 12,
        model="bench-model",
        engine="vllm",
        engine_version="0",
        sampling='{"max_tokens": 1024, "temperature": 0.7}',
        seed=1,
        finish_reason="stop",
        prompt_tokens=120,
        completion_tokens=300,
        cached=False,
        run_id="bench-run",
        created_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    )


def _text(rng: np.random.Generator, chars: int, tag: str = "") -> str:
    words = rng.choice(WORDS, size=chars // 4)
    return f"{tag} " + " ".join(words.tolist())[:chars]


def write_inputs(assets_dir: Path, rows: int, seed: int = 0) -> list[str]:
    """The stored inputs of sft_dataset for `rows` samples over rows/1000 tags; returns the
    tag partition keys."""
    store = AssetStore(str(assets_dir))
    rng = np.random.default_rng(seed)
    tags = max(1, rows // ROWS_PER_TAG)
    # 5% cross-tag paraphrases, so the export's dedup has work to do.
    data = synthetic_embeddings(tags * ROWS_PER_TAG, seed=seed, duplicate_share=0.05)
    template = _templates()
    nodes, keys = [], []
    filler = [_text(rng, ANSWER_CHARS) for _ in range(64)]
    for t in range(tags):
        node = TreeNode.from_path(
            ["Bench", f"Domain {t % 45}", f"Leaf {t}"], language="en", source="llm", is_leaf=True
        )
        nodes.append(KnowledgeTreeRow(**node.model_dump(), lineage=None))
        tag = node.node_id
        keys.append(tag)
        part = slice(t * ROWS_PER_TAG, (t + 1) * ROWS_PER_TAG)
        qids = [f"q-{row_id[2:]}" for row_id in data.ids[part]]
        questions = [f"Question {q} about {node.path_text}: how and why?" for q in qids]
        drafts = [f"Draft {q}. {filler[i % 64]}" for i, q in enumerate(qids)]
        answers = [f"Refined {q}. {filler[(i + 7) % 64]}" for i, q in enumerate(qids)]
        origin = pl.DataFrame(
            {
                "tag_path": [node.path_text] * ROWS_PER_TAG,
                "task": ["domain_knowledge_qa"] * ROWS_PER_TAG,
                "difficulty": [("easy", "medium", "hard")[i % 3] for i in range(ROWS_PER_TAG)],
            }
        ).to_struct("origin")
        common = {
            "method": [METHOD] * ROWS_PER_TAG,
            "partition_key": [tag] * ROWS_PER_TAG,
            "language": ["en"] * ROWS_PER_TAG,
            "origin": origin,
        }
        dedup = _fill(
            template["dedup"],
            id=qids,
            parent_id=[tag] * ROWS_PER_TAG,
            text=questions,
            embedding=pl.Series(data.vectors[part]).cast(pl.List(pl.Float32)),
            **common,
        )
        draft_ids = [f"a-{q[2:]}" for q in qids]
        draft = _fill(
            template["draft"],
            id=draft_ids,
            parent_id=qids,
            question=questions,
            answer=drafts,
            **common,
        )
        refined = _fill(
            template["refined"],
            id=[f"r-{q[2:]}" for q in qids],
            parent_id=draft_ids,
            question_id=qids,
            question=questions,
            draft_answer=drafts,
            answer=answers,
            **common,
        )
        store.write(DEDUPLICATED, tag, dedup)
        store.write(CANDIDATES, tag, condor_candidates(refined, draft))
    store.write(KNOWLEDGE_TREE, None, rows_to_frame(nodes, KnowledgeTreeRow))
    return keys


def _templates() -> dict[str, pl.DataFrame]:
    """One-row frames of each stored row type (origin: Condor's struct)."""
    base: dict[str, Any] = {
        "id": "x",
        "parent_id": "x",
        "method": METHOD,
        "partition_key": "x",
        "language": "en",
        "origin": {"tag_path": "x", "task": "x", "difficulty": "easy"},
    }
    critique = ["Clear structure and a direct answer to the question asked."] * 3
    draft_lineage = _lineage("shared/answer")
    return {
        "dedup": rows_to_frame(
            [
                DedupRow(
                    **base,
                    text="x",
                    kept=True,
                    drop_reason=None,
                    duplicate_of=None,
                    similarity=None,
                    embedding=[0.0],
                    embedding_model="all-MiniLM-L6-v2",
                )
            ],
            DedupRow,
            origin=CondorOrigin,
        ),
        "draft": rows_to_frame(
            [
                DraftAnswerRow(
                    **base,
                    question="x",
                    answer="x",
                    truncated=False,
                    drop_reason=None,
                    lineage=draft_lineage,
                )
            ],
            DraftAnswerRow,
            origin=CondorOrigin,
        ),
        "refined": rows_to_frame(
            [
                RefinedAnswerRow(
                    **base,
                    question_id="x",
                    question="x",
                    draft_answer="x",
                    answer="x",
                    truncated=False,
                    rounds=[
                        RefineRound(
                            round=1,
                            strengths=critique,
                            weaknesses=critique,
                            suggestions=critique,
                            critique_error=None,
                            critique_lineage=_lineage("shared/critique"),
                            answer="(the rewrite, as in `answer`)",
                            truncated=False,
                            answer_lineage=_lineage("shared/refine"),
                        )
                    ],
                    rounds_run=1,
                    stop_reason="max_rounds",
                    drop_reason=None,
                )
            ],
            RefinedAnswerRow,
            origin=CondorOrigin,
        ),
    }


def _fill(template: pl.DataFrame, **columns: Any) -> pl.DataFrame:
    """The one-row template repeated, with the given columns replaced (schema unchanged)."""
    n = ROWS_PER_TAG
    frame = template.select(pl.all().gather([0] * n))
    return frame.with_columns(
        [
            pl.Series(name, values, dtype=template.schema[name])
            if not isinstance(values, pl.Series)
            else values.alias(name).cast(template.schema[name])
            for name, values in columns.items()
        ]
    )


def child(assets_dir: str, export_dir: str, keys_file: str) -> None:
    """Materialize sft_dataset as a run process would, then print the peak RSS (MB)."""
    import dagster as dg

    from condor_dagster.methods.condor.partitions import tags_partitions
    from condor_dagster.methods.corpus.resource import CorpusResource
    from condor_dagster.methods.dataset import DATASET_ASSETS, sft_dataset
    from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
    from condor_dagster.resources.parquet_io import ParquetIOManager
    from condor_dagster.resources.query_scorer import QueryScorerResource
    from condor_dagster.resources.scripted_llm import ScriptedLLMResource

    keys = json.loads(Path(keys_file).read_text())
    instance = dg.DagsterInstance.ephemeral()
    assert tags_partitions.name is not None
    instance.add_dynamic_partitions(tags_partitions.name, keys)
    result = dg.materialize(
        DATASET_ASSETS,
        selection=[sft_dataset],
        instance=instance,
        resources={
            "llm": ScriptedLLMResource(rules=[], default_response="unused", use_cache=False),
            "embeddings": SentenceTransformerEmbeddings(),
            "io_manager": ParquetIOManager(base_dir=assets_dir),
            "corpus": CorpusResource(),
            "query_scorer": QueryScorerResource(),
        },
        # The cross-tag search of 200k rows is exact by default (exact_search_max 200,000):
        # minutes of sgemm on 2 cores, for the same memory. The IVF path is timed elsewhere
        # and holds at least as much (it gathers list members), so memory is not understated.
        run_config={
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            "ops": {
                sft_dataset.op.name: {
                    "config": {"export_dir": export_dir, "exact_search_max": 100_000}
                }
            },
        },
    )
    assert result.success
    # Read before anything else is loaded; the row count comes from the materialization's
    # metadata (reading the output back would add a copy no run process holds).
    peak_mb = own_peak_rss_mb()
    (materialization,) = result.asset_materializations_for_node(sft_dataset.op.name)
    rows = materialization.metadata["dagster/row_count"].value
    print(json.dumps({"peak_rss_mb": peak_mb, "rows": rows}))


def own_peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). ru_maxrss is kept across execve on Linux, so in a
    child started by a big parent (the bench, with an engine and 1M embeddings) it reports the
    parent's size at fork: that is how an earlier full run read 6.2 GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(ctx: Context) -> dict[str, Result]:
    rows = ctx.sizes.export_rows
    assets_dir = ctx.workdir / "export-assets"
    ctx.log(f"export: writing {rows} synthetic samples")
    keys = write_inputs(assets_dir, rows)
    samples = len(keys) * ROWS_PER_TAG
    keys_file = ctx.workdir / "export-keys.json"
    keys_file.write_text(json.dumps(keys))
    peaks, seconds, frame_rows = [], [], 0
    ctx.log(f"export: {ctx.reps} x sft_dataset in a child process")
    for rep in range(ctx.reps):
        began = dt.datetime.now()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.export",
                str(assets_dir),
                str(ctx.workdir / f"exports-{rep}"),
                str(keys_file),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds.append((dt.datetime.now() - began).total_seconds())
        report = json.loads(done.stdout.strip().splitlines()[-1])
        peaks.append(report["peak_rss_mb"])
        frame_rows = report["rows"]
    # The sft_dataset frame is long: one row per (sample, variant).
    if frame_rows != samples * len(VARIANTS):
        raise RuntimeError(
            f"sft_dataset has {frame_rows} rows, expected {samples} samples x {len(VARIANTS)} "
            f"variants {VARIANTS}"
        )
    return {
        "export_200k_peak_rss_mb": Result(
            peaks,
            note=(
                f"{samples} samples ({frame_rows} rows: {' + '.join(VARIANTS)}) over "
                f"{len(keys)} tags; {_m(seconds):.0f} s per export"
            ),
            detail={"samples": samples, "rows": frame_rows, "tags": len(keys), "seconds": seconds},
        )
    }


def _m(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


if __name__ == "__main__":
    child(*sys.argv[1:4])
