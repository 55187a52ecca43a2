"""corpus/documents materialized per shard, and corpus_sensor's incremental partitions."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import pytest

from condor_dagster.methods.corpus.assets import CORPUS_ASSETS
from condor_dagster.methods.corpus.partitions import key
from condor_dagster.methods.corpus.resource import CorpusResource
from condor_dagster.methods.corpus.sensors import corpus_sensor, read_cursor, sync_corpus
from condor_dagster.resources.parquet_io import ParquetIOManager

SENSOR = corpus_sensor(name="test_corpus_sensor", asset_selection=[key("documents")])


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "en-US").mkdir(parents=True)
    (root / "en-US" / "intro.html").write_text(
        "<html><head><title>Intro</title></head><body><nav><a href='/'>Home</a></nav>"
        "<article><h1>Intro</h1><p>Debian is a free operating system developed by volunteers "
        "around the world, and it has been maintained for three decades.</p>"
        "<p>It ships thousands of packages that are tested together before each release.</p>"
        "</article></body></html>",
        encoding="utf-8",
    )
    lines = [json.dumps({"article": f"Document number {i} has some text."}) for i in range(3)]
    lines.insert(1, "{broken")
    (root / "news.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def materialize(
    instance: dg.DagsterInstance, resources: Mapping[str, object], keys: list[str]
) -> dg.ExecuteInProcessResult:
    if len(keys) == 1:
        return dg.materialize(
            CORPUS_ASSETS, partition_key=keys[0], resources=resources, instance=instance
        )
    return dg.materialize(
        CORPUS_ASSETS,
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
    )


def test_documents_and_sensor_increments(
    tmp_path: Path, corpus_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    io_manager = ParquetIOManager(base_dir=str(tmp_path / "assets"))
    corpus = CorpusResource(path=str(corpus_dir), docs_per_shard=2)
    resources: dict[str, object] = {"io_manager": io_manager, "corpus": corpus}

    first = sync_corpus(instance, corpus, SENSOR)
    expected = ["en-us.intro.html", "news.jsonl.000", "news.jsonl.001"]
    assert list(instance.get_dynamic_partitions("corpus_shards")) == expected
    assert [r.partition_key for r in first.run_requests or []] == expected
    assert all(r.asset_selection == [key("documents")] for r in first.run_requests or [])
    assert set(read_cursor(first.cursor)) == set(expected)

    # One run over the range of all three shards, as a backfill run would be.
    result = materialize(instance, resources, expected)
    assert result.success
    store = io_manager.store()
    html = store.read(["corpus", "documents"], "en-us.intro.html").to_dicts()
    assert len(html) == 1
    assert html[0]["title"] == "Intro" and html[0]["language"] == "en-us"
    assert "free operating system developed by volunteers" in html[0]["text"]
    assert "Home" not in html[0]["text"].splitlines()
    news0 = store.read(["corpus", "documents"], "news.jsonl.000").to_dicts()
    assert [(r["position"], r["drop_reason"]) for r in news0] == [
        (0, None),
        (1, "malformed_document"),
    ]
    assert news0[1]["detail"].startswith("line 2: not JSON")
    news1 = store.read(["corpus", "documents"], "news.jsonl.001").to_dicts()
    assert [r["text"] for r in news1] == [
        "Document number 1 has some text.",
        "Document number 2 has some text.",
    ]
    materialization = result.asset_materializations_for_node("corpus__documents")[0]
    meta = materialization.metadata
    assert meta["documents"].value == 5 and meta["kept"].value == 4
    assert meta["dropped_by_reason"].value == {"malformed_document": 1}
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]

    # A new file: exactly one new partition and one run request for it.
    (corpus_dir / "notes.txt").write_text("A new note.\n", encoding="utf-8")
    second = sync_corpus(instance, corpus, SENSOR, cursor=first.cursor)
    assert list(instance.get_dynamic_partitions("corpus_shards")) == [*expected, "notes.txt"]
    assert [r.partition_key for r in second.run_requests or []] == ["notes.txt"]
    (request,) = second.run_requests or []
    assert request.run_key is not None and request.run_key.startswith("corpus:notes.txt:")
    assert materialize(instance, resources, ["notes.txt"]).success

    # A removed file keeps its partition and is reported; a changed file is reported.
    (corpus_dir / "en-US" / "intro.html").unlink()
    news = corpus_dir / "news.jsonl"
    news.write_text(news.read_text() + json.dumps({"article": "more"}) + "\n")
    os.utime(news, ns=(1, 1))  # a fingerprint surely different from the first one
    with caplog.at_level(logging.WARNING):
        third = sync_corpus(instance, corpus, SENSOR, cursor=second.cursor)
    assert "en-us.intro.html" in instance.get_dynamic_partitions("corpus_shards")
    # news.jsonl grew from 4 to 5 documents: its shards keep their keys, one is added.
    assert [r.partition_key for r in third.run_requests or []] == ["news.jsonl.002"]
    assert "news.jsonl.002" in instance.get_dynamic_partitions("corpus_shards")
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "en-us.intro.html" in warnings and "news.jsonl" in warnings

    # Nothing new: an evaluation from the latest cursor requests nothing and says why.
    fourth = sync_corpus(instance, corpus, SENSOR, cursor=third.cursor)
    assert fourth.run_requests == []
    assert fourth.skip_reason is not None
    reason = fourth.skip_reason.skip_message or ""
    assert "0 new partitions" in reason and "1 removed (kept): ['en-us.intro.html']" in reason
    assert "0 changed files" in reason  # a change is reported once, against the cursor


def test_sensor_can_skip_runs_and_check_fails_on_no_usable_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "blank.txt").write_text("   \n", encoding="utf-8")
    instance = dg.DagsterInstance.ephemeral()
    corpus = CorpusResource(path=str(root))
    monkeypatch.setenv("CONDOR_SENSOR_REQUESTS_RUNS", "0")
    result = sync_corpus(instance, corpus, SENSOR)
    assert result.run_requests == []
    assert list(instance.get_dynamic_partitions("corpus_shards")) == ["blank.txt"]
    resources = {"io_manager": ParquetIOManager(base_dir=str(tmp_path / "a")), "corpus": corpus}
    run = materialize(instance, resources, ["blank.txt"])
    (check,) = run.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["shards_without_usable_document"].value == ["blank.txt"]


def test_resource_root_and_unknown_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDOR_CORPUS_DIR", str(tmp_path / "env"))
    assert CorpusResource().root() == tmp_path / "env"
    monkeypatch.delenv("CONDOR_CORPUS_DIR")
    monkeypatch.setenv("CONDOR_HOME", str(tmp_path / "home"))
    assert CorpusResource().root() == tmp_path / "home" / "corpus"
    with pytest.raises(FileNotFoundError, match="CONDOR_CORPUS_DIR"):
        CorpusResource().discover()
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match=r"'gone.txt' is not in .* removed"):
        CorpusResource(path=str(tmp_path / "c")).read("gone.txt")
