"""`make demo`'s command on the real model: real English out, and a prompt exit."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from .test_clean_exit import EXIT_WITHIN_S, run_and_time_exit

# The commonest English words: real text is full of them, a random-weight model's text is not.
ENGLISH_FUNCTION_WORDS = frozenset(
    {"the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "with", "is", "are"}
    | {"was", "be", "it", "this", "that", "you", "your", "can", "as", "by"}
)


def english_share(text: str) -> float:
    words = re.findall(r"[A-Za-z']+", text.lower())
    return sum(w in ENGLISH_FUNCTION_WORDS for w in words) / max(len(words), 1)


@pytest.mark.engine
def test_demo_command_runs_the_pipeline_on_the_real_model(tmp_path, smollm2_model):
    """`make demo`'s command on a fresh CONDOR_HOME with SmolLM2 (installed once per session):
    grows a tree, runs every tag stage, exports real English, tells the user where things are,
    and exits as soon as it is done."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("CONDOR_DATA_DIR",)}
    env.update(
        CONDOR_HOME=str(home), DAGSTER_HOME=str(home / "dagster_home"), CONDOR_MODEL=smollm2_model
    )
    condor = str(Path(sys.executable).with_name("condor"))
    out, exit_s = run_and_time_exit(
        [condor, "demo", "--roots", "1", "--max-tags", "2", "--methods", "condor"],
        env,
        timeout_s=900,
    )
    assert "succeeded" in out, out[-3000:]
    assert exit_s < EXIT_WITHIN_S, f"the demo exited {exit_s:.1f}s after its last line"
    stages = (
        "raw_questions",
        "deduplicated_questions",
        "draft_answers",
        "refined_answers",
        "refine_quality",
        "sft_candidates",
    )
    for stage in ("knowledge_tree", *stages, "sft_dataset"):
        assert f"{stage}: " in out, stage
    # AugCon's part of the demo runs the same runs as tests/engine/test_augcon_engine.py
    # (methods/augcon/demo.py); left out here to keep the suite's time.
    assert "augcon__" not in out
    assert "dagster dev -w workspace.yaml" in out and "SmolLM2-135M-Instruct" in out
    assets = home / "data" / "assets"
    tags = sorted(p.stem for p in (assets / "condor" / "raw_questions").glob("*.parquet"))
    assert 1 <= len(tags) <= 2
    for stage in stages[1:]:
        assert sorted(p.stem for p in (assets / "condor" / stage).glob("*.parquet")) == tags, stage
    assert (assets / "condor" / "knowledge_tree.parquet").is_file()
    exports = home / "data" / "exports"
    for name in (
        "README.md",
        "sft_refine.messages.jsonl",
        "sft_void.sharegpt.jsonl",
        "condor/sft_refine.parquet",
    ):
        assert (exports / name).is_file(), name
    # Real words: the questions and answers are English, not the tiny model's noise.
    samples = [
        json.loads(line) for line in (exports / "sft_void.messages.jsonl").read_text().splitlines()
    ]
    assert samples, "no sample survived the filters"
    questions = " ".join(s["messages"][0]["content"] for s in samples)
    answers = " ".join(s["messages"][1]["content"] for s in samples)
    assert english_share(questions) > 0.15, questions[:500]
    assert english_share(answers) > 0.15, answers[:500]
    card = (exports / "README.md").read_text()
    assert "smollm2" in card.lower()
    # The trace example it prints works on the data it made.
    traced = re.search(r"condor trace (r-[0-9a-f]+)", out)
    assert traced is not None
    assert f"trace {traced.group(1)} (condor/refined_answers)" in out
    assert (home / "data" / "llm_cache.sqlite3").is_file()
    # The runs are recorded on the instance the UI will open, which reports no telemetry.
    assert any((home / "dagster_home").rglob("*.db"))
    assert "enabled: false" in (home / "dagster_home" / "dagster.yaml").read_text()


def test_english_share_tells_text_from_noise():
    assert english_share("The cat sat on the mat, and it was happy to be in the sun.") > 0.4
    assert english_share("zxq vlorp ksst 12 ##@ brrk qwe") == 0.0
