"""AugCon end to end on the real engine (SmolLM2-135M-Instruct in process, the session's one
engine) over two real handbook pages: trees, the trained scorer, the filter, demos, grounded
answers and candidates; the same runs again generate nothing and give the same ids."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from condor_dagster.methods.augcon.assets import AUGCON_ASSETS
from condor_dagster.methods.augcon.definitions import augcon_scorer_job, augcon_shards_job
from condor_dagster.methods.augcon.demo import run_augcon_demo
from condor_dagster.methods.corpus.demo import install_demo_corpus
from condor_dagster.methods.corpus.resource import CorpusResource
from condor_dagster.methods.dataset import DATASET_ASSETS
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.query_scorer import QueryScorerResource

pytestmark = pytest.mark.engine
PAGES = {"en-US": ("sect.why-debian.html",), "zh-CN": ("sect.foundation-documents.html",)}
LLM_STAGES = ("context_tree", "scorer_triplets", "answer_demos", "grounded_answers")


def _figures(results: list[dg.ExecuteInProcessResult]) -> dict[str, dict[str, object]]:
    """The first materialization's metadata of every AugCon asset the runs materialized."""
    out: dict[str, dict[str, object]] = {}
    for result in results:
        for asset in AUGCON_ASSETS:
            node = "__".join(asset.key.path)
            if node in {n.name for n in result.job_def.nodes}:
                found = result.asset_materializations_for_node(node)
                if found:
                    out[asset.key.path[-1]] = {k: v.value for k, v in found[0].metadata.items()}
    return out


def test_augcon_on_smollm2_over_handbook_pages(
    smollm2_engine: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONDOR_DATA_DIR", str(tmp_path / "data"))
    corpus = CorpusResource(path=str(tmp_path / "corpus"))
    install_demo_corpus(tmp_path / "corpus", pages=PAGES)
    io_manager = ParquetIOManager(base_dir=str(tmp_path / "assets"))
    defs = dg.Definitions(
        assets=DATASET_ASSETS,
        jobs=[augcon_shards_job, augcon_scorer_job],
        resources={
            "llm": smollm2_engine,
            "embeddings": SentenceTransformerEmbeddings(),
            "io_manager": io_manager,
            "corpus": corpus,
            "query_scorer": QueryScorerResource(threads=2),
        },
    )
    instance = dg.DagsterInstance.ephemeral()
    first = run_augcon_demo(defs, instance, corpus)
    assert [r.success for r in first] == [True, True, True]
    store = io_manager.store()
    keys = sorted(instance.get_dynamic_partitions("corpus_shards"))
    assert keys == ["en-us.sect.why-debian.html", "zh-cn.sect.foundation-documents.html"]

    tree = pl.concat([store.read(["augcon", "context_tree"], k) for k in keys])
    usable = tree.filter(pl.col("drop_reason").is_null())
    assert usable.height >= 3, tree.select("stop_reason", "drop_reason", "text")
    # Real English questions from the English page. (SmolLM2's Chinese varies with the CPU's
    # numerics, from Chinese questions to none usable: its shard is only checked for shape.)
    english = usable.filter(pl.col("partition_key") == keys[0])["text"].to_list()
    assert english, tree.select("partition_key", "drop_reason", "text")
    letters = "".join(english)
    assert sum(ch.isascii() for ch in letters) / len(letters) > 0.95, english
    assert set(usable["partition_key"]) <= set(keys)
    assert (
        tree["lineage"]
        .struct.field("model")
        .drop_nulls()
        .str.ends_with("smollm2-135m-instruct")
        .all()
    )

    figures = _figures(first)
    record = store.read(["augcon", "query_scorer"])
    assert figures["query_scorer"]["heldout_accuracy"] == record["heldout_accuracy"][0]
    assert record["train_triplets"][0] >= 4
    assert Path(record["model_dir"][0], "scorer.json").is_file()

    filtered = pl.concat([store.read(["augcon", "filtered_questions"], k) for k in keys])
    assert set(filtered["id"]) == set(usable["id"])  # every usable question gets a decision
    ranks = filtered.group_by(pl.col("origin").struct.field("chunk_id")).agg(pl.col("rank"))
    assert all(sorted(r) == list(range(len(r))) for r in ranks["rank"].to_list())

    answers = pl.concat([store.read(["augcon", "grounded_answers"], k) for k in keys])
    dedup = pl.concat([store.read(["augcon", "deduplicated_questions"], k) for k in keys])
    assert sorted(answers["parent_id"]) == sorted(dedup.filter(pl.col("kept"))["id"])
    assert answers.filter(pl.col("drop_reason").is_null()).height >= 1
    candidates = {k: store.read(["augcon", "sft_candidates"], k) for k in keys}
    assert sum(c.height for c in candidates.values()) == answers.height

    # The same three runs again: the cache answers every request, the ids do not move.
    again = run_augcon_demo(defs, instance, corpus)
    assert [r.success for r in again] == [True, True, True]
    rerun = _figures(again)
    for stage in LLM_STAGES:
        assert rerun[stage]["cache_misses"] == 0, (stage, rerun[stage])
    for k in keys:
        assert (
            store.read(["augcon", "sft_candidates"], k)["id"]
            .sort()
            .equals(candidates[k]["id"].sort())
        )
