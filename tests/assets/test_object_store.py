"""A non-local base (an fsspec URL) works everywhere the path layout is used: the IO manager,
the tags sensor, sft_dataset's inputs and `condor trace` all go through the one AssetStore."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from condor_dagster.core.storage import AssetStore
from condor_dagster.core.trace import trace
from condor_dagster.methods import traces  # noqa: F401  (registers the methods' stages)
from condor_dagster.methods.corpus.resource import CorpusResource
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.query_scorer import QueryScorerResource

from .conftest import ALL_ASSETS, ONE_TAG, CondorWorld, scripted_llm


def test_the_whole_chain_on_an_fsspec_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    base = f"memory://condor-{uuid.uuid4().hex[:8]}/assets"
    monkeypatch.delenv("CONDOR_ASSETS_DIR", raising=False)
    monkeypatch.setenv("CONDOR_DATA_DIR", str(tmp_path / "data"))
    world = CondorWorld(
        instance=dg.DagsterInstance.ephemeral(),
        assets_dir=tmp_path / "unused",
        resources={
            "llm": scripted_llm(tmp_path / "cache.sqlite3"),
            "embeddings": SentenceTransformerEmbeddings(),
            "io_manager": ParquetIOManager(base_dir=base),
            "corpus": CorpusResource(path=str(tmp_path / "corpus")),
            "query_scorer": QueryScorerResource(),
        },
    )
    assert world.materialize_tree(**ONE_TAG).success
    world.sync_tags()  # the sensor reads the tree from the memory filesystem
    (key,) = world.tags()
    assert world.materialize_tags([key]).success
    out = tmp_path / "exports"
    run = dg.materialize(
        ALL_ASSETS,
        selection=["sft_dataset"],
        resources=world.resources,
        instance=world.instance,
        run_config={"ops": {"sft_dataset": {"config": {"export_dir": str(out)}}}},
    )
    assert run.success

    store = AssetStore(base)
    assert not store.is_local
    assert store.partitions(["condor", "sft_candidates"]) == [key]
    assert not (tmp_path / "data" / "assets").exists()  # nothing went to the local default
    samples = store.read(["sft_dataset"])
    exported = pl.read_parquet(out / "condor" / "sft_refine.parquet")
    assert sorted(exported["id"]) == sorted(
        samples.filter(pl.col("kept") & (pl.col("variant") == "refine"))["id"]
    )
    # Trace walks the rows back through the same store, down to the tree path.
    found = trace(exported["id"][0], base)
    assert [s.stage for s in found.steps] == [
        "condor/refined_answers",
        "condor/draft_answers",
        "condor/raw_questions",
    ]
    assert found.origin_chain[-1].node_id == key and found.warnings == []
    assert all(s.file.startswith("memory://") for s in found.steps)
