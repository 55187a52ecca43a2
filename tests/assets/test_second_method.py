"""A second method built only from the shared stage factories (a scripted source of a few
questions per corpus shard -> dedup -> answers -> candidates) flows into sft_dataset beside
Condor, and `condor trace` follows its samples: the next methods only add their own folder."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from pydantic import BaseModel

from condor_dagster.core.rows import SampleRow, content_id, rows_to_frame
from condor_dagster.core.trace import (
    TraceMethod,
    TraceStage,
    format_trace,
    register,
    trace,
    unregister,
)
from condor_dagster.methods.condor import trace as condor_trace
from condor_dagster.methods.condor.assets import CONDOR_ASSETS, CONDOR_EXPORT
from condor_dagster.stages.answers import answers_stage
from condor_dagster.stages.candidates import candidates_stage
from condor_dagster.stages.dedup import dedup_stage
from condor_dagster.stages.partitions import partitioned_stage
from condor_dagster.stages.sft_dataset import MethodExport, sft_dataset_stage

from .conftest import ONE_TAG, make_world, scripted_llm

del condor_trace  # imported for its registrations
METHOD = "toy"
PREFIX = (METHOD,)
shards = dg.StaticPartitionsDefinition(["shard-a", "shard-b"])
# Nearly the Condor question every tag asks (SCRIPTED_RULES: "Which tool suits task {seed}
# best?"): a cross-method near-duplicate.
SHARED_QUESTION = "Which tool suits task 1 best?"
DOCUMENTS = {
    "shard-a": ["How do tides form on Earth?", "What makes bread rise?", SHARED_QUESTION],
    "shard-b": ["Why is the sea salty?", "How do tides form on Earth?"],
}


class ToyOrigin(BaseModel):
    document_id: str


class ToyQuestion(SampleRow):
    origin: ToyOrigin  # type: ignore[assignment]
    text: str
    drop_reason: str | None


def toy_question_rows(shard: str) -> list[ToyQuestion]:
    return [
        ToyQuestion(
            id=content_id("tq", shard, i, text),
            parent_id=f"{shard}.doc{i}",
            method=METHOD,
            partition_key=shard,
            language="en",
            origin=ToyOrigin(document_id=f"{shard}.doc{i}"),
            text=text,
            drop_reason=None,
        )
        for i, text in enumerate(DOCUMENTS[shard])
    ]


@partitioned_stage(
    name="raw_questions",
    key_prefix=PREFIX,
    partitions_def=shards,
    group=METHOD,
    kinds={"parquet"},
    code_version="toy-v1",
)
def toy_raw_questions(context: dg.AssetExecutionContext) -> pl.DataFrame:
    (shard,) = context.partition_keys
    return rows_to_frame(toy_question_rows(shard), ToyQuestion)


def key(name: str) -> dg.AssetKey:
    return dg.AssetKey([METHOD, name])


SHARED = {"key_prefix": PREFIX, "partitions_def": shards, "group": METHOD}
toy_dedup = dedup_stage(upstream=key("raw_questions"), **SHARED)
toy_answers = answers_stage(upstream=key("deduplicated_questions"), id_prefix="ta", **SHARED)


def toy_candidates(answers: pl.DataFrame) -> pl.DataFrame:
    return answers.select(
        "id",
        "parent_id",
        "method",
        "partition_key",
        "language",
        "origin",
        pl.lit("plain").alias("variant"),
        pl.col("parent_id").alias("question_id"),
        "question",
        "answer",
        "truncated",
        pl.col("lineage").struct.field("finish_reason").alias("finish_reason"),
        "drop_reason",
        "lineage",
    )


toy_sft_candidates = candidates_stage(
    method=METHOD, ins={"answers": key("draft_answers")}, build=toy_candidates, **SHARED
)
TOY_ASSETS = [toy_raw_questions, toy_dedup, toy_answers, toy_sft_candidates]


def toy_origin_check(samples: pl.DataFrame, extras: object) -> dict[str, object]:
    documents = {f"{s}.doc{i}" for s, texts in DOCUMENTS.items() for i in range(len(texts))}
    lost = samples.filter(~pl.col("origin").struct.field("document_id").is_in(list(documents)))
    return {"rows_without_document": lost.height} if lost.height else {}


TOY_EXPORT = MethodExport(
    method=METHOD,
    candidates=key("sft_candidates"),
    embeddings=key("deduplicated_questions"),
    origin_check=toy_origin_check,
    jsonl_fields=("document_id",),
)
both_methods_dataset = sft_dataset_stage([CONDOR_EXPORT, TOY_EXPORT])
ALL = [*CONDOR_ASSETS, *TOY_ASSETS, both_methods_dataset]


@pytest.fixture(autouse=True)
def toy_trace():
    """The toy's stages are traceable during these tests only."""
    register(
        TraceMethod(method=METHOD, origin_label="document"),
        [
            TraceStage(
                METHOD,
                (METHOD, "draft_answers"),
                "ta",
                "answer",
                "answer",
                (METHOD, "raw_questions"),
            ),
            TraceStage(
                METHOD,
                (METHOD, "raw_questions"),
                "tq",
                "text",
                "question",
                None,
                dedup=(METHOD, "deduplicated_questions"),
            ),
        ],
    )
    yield
    unregister(METHOD)


def _export(world, out: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ALL,
        selection=[both_methods_dataset],
        resources=world.resources,
        instance=world.instance,
        run_config={"ops": {"sft_dataset": {"config": {"export_dir": str(out)}}}},
    )


def test_a_second_method_flows_into_sft_dataset_beside_condor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    world = make_world(tmp_path, monkeypatch, scripted_llm(tmp_path / "cache.sqlite3"))
    assert world.materialize_tree(**ONE_TAG).success
    world.sync_tags()
    assert world.materialize_tags(world.tags()).success

    # The toy not materialized yet: sft_dataset exports Condor alone.
    alone = _export(world, tmp_path / "alone")
    assert alone.success
    assert not (tmp_path / "alone" / "toy").exists()

    for shard in ("shard-a", "shard-b"):
        run = dg.materialize(
            ALL,
            selection=TOY_ASSETS,
            partition_key=shard,
            resources=world.resources,
            instance=world.instance,
        )
        assert run.success
    # Within shard-b nothing repeats; across shards the tides question does (sft_dataset's
    # cross-partition pass drops the later id).
    dedup = world.read("toy/deduplicated_questions", "shard-a")
    assert dedup["kept"].all() and dedup["embedding"].null_count() == 0

    out = tmp_path / "exports"
    run = _export(world, out)
    assert run.success
    samples = world.read("sft_dataset")
    assert set(samples["method"]) == {"condor", "toy"}
    toy = samples.filter(pl.col("method") == "toy")
    assert set(toy["variant"]) == {"plain"} and toy.height == 5

    # Cross-method: the toy's near copy of a Condor question goes, in favour of the smaller
    # question id (Condor's q-... sorts before tq-...), which stays; cross-shard: the tides
    # question stays once.
    (shared,) = toy.filter(pl.col("question") == SHARED_QUESTION).iter_rows(named=True)
    assert shared["drop_reason"] == "cross_partition_duplicate" and not shared["kept"]
    original = samples.filter(pl.col("question_id") == shared["question_dup_of"])
    assert set(original["method"]) == {"condor"} and original["kept"].all()
    assert "task" in original["question"][0] and shared["question_similarity"] >= 0.9
    tides = toy.filter(pl.col("question") == "How do tides form on Earth?")
    assert tides["kept"].sum() == 1

    # Files per (method, variant) and one mixed file per variant.
    toy_file = pl.read_parquet(out / "toy" / "sft_plain.parquet")
    assert sorted(toy_file["id"]) == sorted(toy.filter(pl.col("kept"))["id"])
    assert "document_id" in toy_file.columns  # the origin struct, flattened
    assert (out / "condor" / "sft_refine.parquet").is_file()
    mixed = pl.read_parquet(out / "sft_plain.parquet")
    assert set(mixed["method"]) == {"toy"}
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| toy | plain |" in card and "| condor | refine |" in card
    assert "### toy / plain" in card

    # Trace follows a toy sample back to its question, its dedup decision and its document.
    sample = toy_file.row(0, named=True)
    found = trace(sample["id"], world.assets_dir)
    assert [s.stage for s in found.steps] == ["toy/draft_answers", "toy/raw_questions"]
    assert found.method == "toy" and found.origin["document_id"] == sample["document_id"]
    assert found.dedup is not None and found.dedup.kept
    assert "toy/raw_questions" in format_trace(found)


def test_a_prefix_taken_by_another_stage_is_refused():
    with pytest.raises(ValueError, match="already used by condor/draft_answers"):
        register(
            TraceMethod(method="other"),
            [TraceStage("other", ("other", "answers"), "a", "answer", "answer", None)],
        )


def test_embeddings_of_different_models_are_not_mixed():
    from condor_dagster.core.export import embedding_models

    frames = {
        "condor": pl.DataFrame({"embedding_model": ["all-MiniLM-L6-v2"]}),
        "toy": pl.DataFrame({"embedding_model": ["bge-small"]}),
    }
    with pytest.raises(ValueError, match="different embedding models"):
        embedding_models(frames)
