"""export_200k_peak_rss_mb: peak memory of materializing sft_dataset over 200,000 synthetic
samples, measured in a child process (so nothing the bench itself holds is counted).

The parent writes what the tag assets would have stored (knowledge_tree, and per tag:
deduplicated_questions with embeddings, draft_answers, refined_answers with one critique
round) as the Parquet IO manager lays it out; the child materializes sft_dataset through
Dagster on an ephemeral instance and reports its own peak RSS.
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
from condor_dagster.core.rows import (
    DedupQuestionRow,
    DraftAnswerRow,
    KnowledgeTreeRow,
    Lineage,
    RefinedAnswerRow,
    RefineRound,
    rows_to_frame,
)
from condor_dagster.methods.condor.taxonomy import TreeNode

ROWS_PER_TAG = 1000
# Typical lengths (characters) of a real model's output: ~300-token answers.
ANSWER_CHARS = 1200
WORDS = "the of a to in and is for that with on as be by this are or it from at an".split()  # noqa: SIM905


def _lineage() -> Lineage:
    return Lineage(
        prompt_name="answer/en",
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
    """The stored outputs of the tag assets for `rows` samples over rows/1000 tags."""
    rng = np.random.default_rng(seed)
    tags = max(1, rows // ROWS_PER_TAG)
    # 5% cross-tag paraphrases, so the export's dedup has work to do.
    data = synthetic_embeddings(tags * ROWS_PER_TAG, seed=seed, duplicate_share=0.05)
    lineage = _lineage()
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
        common = {
            "tag_id": [tag] * ROWS_PER_TAG,
            "tag_path": [node.path_text] * ROWS_PER_TAG,
            "task": ["domain_knowledge_qa"] * ROWS_PER_TAG,
            "difficulty": [("easy", "medium", "hard")[i % 3] for i in range(ROWS_PER_TAG)],
            "language": ["en"] * ROWS_PER_TAG,
        }
        template = _templates(lineage)
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
        for asset, frame in (
            ("deduplicated_questions", dedup),
            ("draft_answers", draft),
            ("refined_answers", refined),
        ):
            out = assets_dir / asset / f"{tag}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(out, compression="zstd")
    rows_to_frame(nodes, KnowledgeTreeRow).write_parquet(assets_dir / "condor" / "knowledge_tree.parquet")
    return keys


def _templates(lineage: Lineage) -> dict[str, pl.DataFrame]:
    base = {
        "id": "x",
        "parent_id": "x",
        "tag_id": "x",
        "tag_path": "x",
        "task": "x",
        "difficulty": "easy",
        "language": "en",
    }
    critique = ["Clear structure and a direct answer to the question asked."] * 3
    return {
        "dedup": rows_to_frame(
            [
                DedupQuestionRow(
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
            DedupQuestionRow,
        ),
        "draft": rows_to_frame(
            [DraftAnswerRow(**base, question="x", answer="x", truncated=False, lineage=lineage)],
            DraftAnswerRow,
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
                            critique_lineage=lineage,
                            answer="(the rewrite, as in `answer`)",
                            truncated=False,
                            answer_lineage=lineage,
                        )
                    ],
                    rounds_run=1,
                    stop_reason="max_rounds",
                )
            ],
            RefinedAnswerRow,
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
            else values.alias(name)
            for name, values in columns.items()
        ]
    )


def child(assets_dir: str, export_dir: str, keys_file: str) -> None:
    """Materialize sft_dataset as a run process would, then print the peak RSS (MB)."""
    import dagster as dg

    from condor_dagster.methods.dataset import sft_dataset
    from condor_dagster.methods.condor.assets import CONDOR_ASSETS
    from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
    from condor_dagster.resources.parquet_io import ParquetIOManager
    from condor_dagster.resources.scripted_llm import ScriptedLLMResource

    keys = json.loads(Path(keys_file).read_text())
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tags", keys)
    result = dg.materialize(
        CONDOR_ASSETS,
        selection=[sft_dataset],
        instance=instance,
        resources={
            "llm": ScriptedLLMResource(rules=[], default_response="unused", use_cache=False),
            "embeddings": SentenceTransformerEmbeddings(),
            "io_manager": ParquetIOManager(base_dir=assets_dir),
        },
        # The cross-tag search of 200k rows is exact by default (exact_search_max 200,000):
        # minutes of sgemm on 2 cores, for the same memory. The IVF path is timed elsewhere
        # and holds at least as much (it gathers list members), so memory is not understated.
        run_config={
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            "ops": {
                "sft_dataset": {"config": {"export_dir": export_dir, "exact_search_max": 100_000}}
            },
        },
    )
    assert result.success
    # Read before anything else is loaded; the row count comes from the materialization's
    # metadata (reading the output back would add a copy no run process holds).
    peak_mb = own_peak_rss_mb()
    (materialization,) = result.asset_materializations_for_node("sft_dataset")
    samples = materialization.metadata["dagster/row_count"].value
    print(json.dumps({"peak_rss_mb": peak_mb, "samples": samples}))


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
    keys_file = ctx.workdir / "export-keys.json"
    keys_file.write_text(json.dumps(keys))
    peaks, seconds, samples = [], [], 0
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
        samples = report["samples"]
    return {
        "export_200k_peak_rss_mb": Result(
            peaks,
            note=f"{samples} samples over {len(keys)} tags; {_m(seconds):.0f} s per export",
            detail={"samples": samples, "tags": len(keys), "seconds": seconds},
        )
    }


def _m(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


if __name__ == "__main__":
    child(*sys.argv[1:4])
