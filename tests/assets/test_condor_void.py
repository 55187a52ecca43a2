"""Condor Void as Dagster assets: knowledge_tree -> raw_questions -> deduplicated_questions ->
draft_answers, on a real instance, real Parquet, real embeddings and FAISS. The LLM is scripted
here where the test needs controlled text; test_condor_void_engine.py runs the real engine."""

from __future__ import annotations

import random
from collections import Counter

import dagster as dg
import polars as pl
import pytest

from condor_dagster.core.dedup_frame import dedup_frame
from condor_dagster.core.prompts import (
    code_version,
    load_prompt,
    parse_prompt,
    prompt_folder,
    prompts_sha,
)
from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN
from condor_dagster.methods.condor.raw_questions import RawQuestionsConfig, raw_questions
from condor_dagster.methods.condor.records import DIFFICULTIES, TASK_TYPES
from condor_dagster.methods.condor.sensors import tags_sensor
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.response_cache import ResponseCache
from condor_dagster.resources.scripted_llm import ScriptRule

from .conftest import CondorWorld, make_world, scripted_llm

RUN_SPECIFIC = ["run_id", "created_at", "cached"]


def comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """A frame without the lineage fields that name the run that made it."""
    lineage = frame.schema["lineage"]
    assert isinstance(lineage, pl.Struct)
    fields = [f.name for f in lineage.fields if f.name not in RUN_SPECIFIC]
    return frame.with_columns(
        pl.struct([pl.col("lineage").struct.field(f) for f in fields]).alias("lineage")
    )


def test_whole_chain_in_one_multi_partition_run(scripted_world: CondorWorld):
    world = scripted_world
    tree_run = world.materialize_tree()
    tree = world.read("knowledge_tree")
    leaves = tree.filter(pl.col("is_leaf"))
    # 2 roots x 2 sub-domains x 2 leaves; planted bad names were dropped with reasons.
    assert leaves.height == 8
    assert set(leaves["level"].to_list()) == {2}
    meta = tree_run.asset_materializations_for_node("condor__knowledge_tree")[0].metadata
    assert meta["dropped_names"].value == {"duplicate_sibling": 6, "garbage": 6, "empty": 6}
    assert all(PARTITION_KEY_PATTERN.match(k) for k in leaves["node_id"].to_list())

    sync = world.sync_tags()
    keys = world.tags()
    assert keys == leaves["node_id"].to_list()
    assert len(sync.run_requests or []) == 1  # 8 new tags <= 25 per run: one backfill run

    run = world.materialize_tags(keys)
    assert run.success
    # One engine call per asset for all 8 partitions together.
    raw_meta = run.asset_materializations_for_node("condor__raw_questions")[0].metadata
    assert raw_meta["requests"].value == 8 * 7
    assert raw_meta["rows_per_partition"].value == dict.fromkeys(keys, 21)
    # Each partition's materialization carries its own row count.
    for event in run.asset_materializations_for_node("condor__draft_answers"):
        stored = world.read("draft_answers", str(event.partition))
        assert event.metadata["dagster/partition_row_count"].value == stored.height
        assert event.metadata["dagster/row_count"].value == stored.height

    for key in keys:
        raw = world.read("raw_questions", key)
        assert raw.height == 21
        origin = raw["origin"].struct
        tasks = zip(origin.field("task"), origin.field("difficulty"), strict=True)
        assert Counter(tasks) == Counter((t, d) for t in TASK_TYPES for d in DIFFICULTIES)
        assert set(raw["parent_id"]) == {key}
        assert raw["lineage"].struct.field("run_id").unique().to_list() == [run.run_id]
        assert raw["lineage"].struct.field("prompt_sha").unique().to_list() == [
            load_prompt("condor/questions", "en").sha
        ]
        dedup = world.read("deduplicated_questions", key)
        assert sorted(dedup["id"]) == sorted(raw["id"])  # every input row has a decision
        kept = dedup.filter(pl.col("kept"))
        assert kept["embedding"].list.len().unique().to_list() == [384]
        answers = world.read("draft_answers", key)
        assert sorted(answers["parent_id"]) == sorted(kept["id"])
        assert set(answers["partition_key"]) == {key}
    checks = {
        (e.asset_key.path[-1], e.check_name): e.passed for e in run.get_asset_check_evaluations()
    }
    # 9 Condor checks and the candidates' contract check.
    assert all(checks.values()) and len(checks) == 10


def test_incremental_new_root_adds_only_its_tags(tmp_path, monkeypatch):
    world = make_world(tmp_path, monkeypatch, scripted_llm(tmp_path / "cache.sqlite3"))
    taxonomy = tmp_path / "taxonomy.yaml"
    taxonomy.write_text(
        "roots:\n"
        "  - name: Pets\n"
        '    custom: ["Cats, dogs / 🐾", "人工智能 & 大模型", "Quotes \\"q\\" and \'x\'"]\n',
        encoding="utf-8",
    )
    assert world.materialize_tree(taxonomy_path=str(taxonomy)).success
    world.sync_tags()
    first = world.tags()
    # 2 LLM sub-domains x 2 leaves, plus the 3 custom tags, which are leaves themselves.
    assert len(first) == 7
    assert all(PARTITION_KEY_PATTERN.match(k) for k in first)
    assert world.materialize_tags(first).success
    before = {
        k: (world.assets_dir / f"condor/raw_questions/{k}.parquet").read_bytes() for k in first
    }

    taxonomy.write_text(taxonomy.read_text(encoding="utf-8") + "  - Healthcare\n", "utf-8")
    assert world.materialize_tree(taxonomy_path=str(taxonomy)).success
    sync = world.sync_tags()
    new = [k for k in world.tags() if k not in first]
    assert len(new) == 4
    assert world.tags()[: len(first)] == first  # existing tags untouched, in order
    (request,) = sync.run_requests or []
    assert request.tags["dagster/asset_partition_range_start"] == new[0]
    assert request.tags["dagster/asset_partition_range_end"] == new[-1]
    assert world.materialize_tags(new).success

    after = {
        k: (world.assets_dir / f"condor/raw_questions/{k}.parquet").read_bytes() for k in first
    }
    assert after == before
    # A second evaluation finds nothing new to add or request.
    context = dg.build_sensor_context(
        instance=world.instance, resources={"io_manager": world.resources["io_manager"]}
    )
    skip = tags_sensor(context)
    assert isinstance(skip, dg.SkipReason)


def test_planted_near_duplicates_are_dropped_deterministically(tmp_path, monkeypatch):
    rules = [
        ScriptRule(pattern="sub-topics", response='{"names": ["Dog training"]}'),
        ScriptRule(
            pattern="three questions",
            response='{"easy": "How do I train my puppy to sit?", '
            '"medium": "How can I teach my puppy to sit down?", '
            '"hard": "Which tax rules apply to freelance translators in Germany in {seed}?"}',
        ),
    ]
    world = make_world(tmp_path, monkeypatch, scripted_llm(tmp_path / "c.sqlite3", rules=rules))
    assert world.materialize_tree(
        max_roots=1, subdomains_per_root=1, leaves_per_subdomain=1
    ).success
    world.sync_tags()
    (key,) = world.tags()
    assert world.materialize_tags([key]).success
    dedup = world.read("deduplicated_questions", key)
    kept = dedup.filter(pl.col("kept"))
    puppy = dedup.filter(pl.col("text").str.contains("puppy"))
    # 14 puppy questions (7 tasks x easy/medium) collapse to one: the smallest id of the group.
    assert puppy.filter(pl.col("kept"))["id"].to_list() == [min(puppy["id"])]
    assert Counter(puppy["drop_reason"].drop_nulls()) == {
        "exact_duplicate": 12,
        "near_duplicate": 1,
    }
    near = puppy.filter(pl.col("drop_reason") == "near_duplicate").row(0, named=True)
    assert near["duplicate_of"] == min(puppy["id"]) and 0.8 < near["similarity"] < 1.0
    # Following duplicate_of always ends at a kept question.
    by_id = {r["id"]: r for r in dedup.iter_rows(named=True)}
    for row in dedup.filter(~pl.col("kept")).iter_rows(named=True):
        target = by_id[row["duplicate_of"]]
        while not target["kept"]:
            target = by_id[target["duplicate_of"]]
    # The 7 tax questions differ only by a number: near-duplicates of the first one too.
    tax = dedup.filter(pl.col("text").str.contains("tax"))
    assert tax.filter(pl.col("kept"))["id"].to_list() == [min(tax["id"])]
    assert kept.height == 2

    # The same rows in another order give the same decisions.
    raw = world.read("raw_questions", key)
    embedder = SentenceTransformerEmbeddings()
    shuffled = raw.sample(fraction=1.0, shuffle=True, seed=random.Random(3).randint(0, 999))
    again = dedup_frame(shuffled, embedder.embed, embedder.model_id(), 0.9)
    decisions = ["id", "kept", "drop_reason", "duplicate_of"]
    assert again.select(decisions).sort("id").equals(dedup.select(decisions).sort("id"))


def test_bad_llm_output_is_kept_with_reasons(tmp_path, monkeypatch):
    rules = [
        ScriptRule(pattern="sub-topics", response='{"names": ["Only leaf"]}'),
        ScriptRule(
            pattern="Role Playing", response='{"easy": "unterminated', finish_reason="length"
        ),
        ScriptRule(pattern="Daily Chat", response="not json at all"),
        ScriptRule(
            pattern="Creation",
            response='{"easy": "  ", "medium": "Is this fine?", "hard": "Is that ok?"}',
        ),
        ScriptRule(
            pattern="three questions",
            response='{"easy": "What is Q1 {seed}?", "medium": "What is Q2 {seed}?", '
            '"hard": "What is Q3 {seed}?"}',
        ),
    ]
    world = make_world(tmp_path, monkeypatch, scripted_llm(tmp_path / "c.sqlite3", rules=rules))
    assert world.materialize_tree(
        max_roots=1, subdomains_per_root=1, leaves_per_subdomain=1
    ).success
    world.sync_tags()
    (key,) = world.tags()
    run = world.materialize_tags([key])
    raw = world.read("raw_questions", key)
    assert raw.height == 21  # nothing disappears
    reasons = Counter(raw["drop_reason"].fill_null("ok"))
    assert reasons == {"ok": 14, "truncated": 3, "parse_failed": 3, "empty_question": 1}
    failed = raw.filter(pl.col("drop_reason") == "parse_failed").row(0, named=True)
    assert failed["raw_text"] == "not json at all" and failed["error"].startswith("invalid_json")
    rate = next(e for e in run.get_asset_check_evaluations() if e.check_name.startswith("parse"))
    assert rate.passed  # 6/21 failed, under the default bound of 0.5
    # Upstream drops are carried through dedup unchanged and never kept or embedded.
    dedup = world.read("deduplicated_questions", key).sort("id")
    carried = dedup.filter(
        pl.col("id").is_in(raw.filter(pl.col("drop_reason").is_not_null())["id"])
    )
    assert carried.height == 7 and not carried["kept"].any()
    assert carried["embedding"].null_count() == 7
    assert Counter(carried["drop_reason"]) == {
        "truncated": 3,
        "parse_failed": 3,
        "empty_question": 1,
    }


def test_crash_mid_generation_resumes_from_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache.sqlite3"
    world = make_world(tmp_path, monkeypatch, scripted_llm(cache))
    assert world.materialize_tree().success
    world.sync_tags()
    keys = world.tags()

    crashed = world.materialize_tags(
        keys, raise_on_error=False, llm=scripted_llm(cache, fail_after=20)
    )
    assert not crashed.success
    assert not (world.assets_dir / "condor" / "raw_questions").exists()  # no partition file written
    tree_requests = ResponseCache(cache).count()
    assert tree_requests >= 20

    resumed = world.materialize_tags(keys)
    assert resumed.success
    meta = resumed.asset_materializations_for_node("condor__raw_questions")[0].metadata
    assert meta["cache_hits"].value == 20 and meta["cache_misses"].value == 8 * 7 - 20

    # An uninterrupted run elsewhere produces the same rows.
    clean = make_world(tmp_path / "clean", monkeypatch, scripted_llm(tmp_path / "clean.sqlite3"))
    assert clean.materialize_tree().success
    clean.sync_tags()
    assert clean.tags() == keys
    assert clean.materialize_tags(keys).success
    for key in keys:
        for asset in ("raw_questions", "draft_answers"):
            assert comparable(world.read(asset, key)).equals(comparable(clean.read(asset, key)))


def test_prompt_edit_changes_code_version():
    settings = RawQuestionsConfig().model_dump()
    assert raw_questions.code_versions_by_key[raw_questions.key] == code_version(
        [prompts_sha("condor/questions")], settings
    )
    template = load_prompt("condor/questions", "en")
    raw = (prompt_folder("condor") / "en" / "questions.yaml").read_bytes()
    edited = raw.replace(b"realistic questions", b"realistic, specific questions")
    assert edited != raw
    assert parse_prompt(raw).sha == template.sha
    assert code_version([parse_prompt(edited).sha], settings) != code_version(
        [template.sha], settings
    )
    assert code_version([template.sha], {**settings, "temperature": 0.2}) != code_version(
        [template.sha], settings
    )


def test_malformed_taxonomy_fails_with_the_file_and_fix(scripted_world: CondorWorld, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("roots: [Pets\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"bad\.yaml"):
        scripted_world.materialize_tree(taxonomy_path=str(bad))
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(Exception, match="has no roots"):
        scripted_world.materialize_tree(taxonomy_path=str(empty))
    assert not (scripted_world.assets_dir / "condor" / "knowledge_tree.parquet").exists()


def test_partition_missing_from_tree_is_a_clear_error(scripted_world: CondorWorld):
    world = scripted_world
    assert world.materialize_tree(
        max_roots=1, subdomains_per_root=1, leaves_per_subdomain=1
    ).success
    world.instance.add_dynamic_partitions("tags", ["gone-tag.12345678"])
    with pytest.raises(Exception, match="not leaves of the latest knowledge_tree"):
        world.materialize_tags(["gone-tag.12345678"])


def test_chinese_roots_use_chinese_prompts_and_the_markup_fallback(tmp_path, monkeypatch):
    rules = [
        ScriptRule(pattern="子主题", response='{"names": ["犬类训练", "猫咪健康"]}'),
        ScriptRule(
            pattern="三个难度",
            response="[Easy] 小狗怎么学会坐下{seed}？\n[Medium] 如何在一周内训练{seed}？\n"
            "[Hard] 为什么不同犬种的训练方法{seed}差别很大？",
        ),
    ]
    world = make_world(tmp_path, monkeypatch, scripted_llm(tmp_path / "c.sqlite3", rules=rules))
    tree_run = world.materialize_tree(
        languages=["zh"], max_roots=1, subdomains_per_root=2, leaves_per_subdomain=2
    )
    assert tree_run.success
    tree = world.read("knowledge_tree")
    assert set(tree["language"]) == {"zh"} and tree["path"][0].to_list() == ["婚恋情感"]
    # The script names the same two tags at every level: below each sub-domain, the one that
    # repeats its parent is dropped, so each sub-domain keeps one leaf.
    meta = tree_run.asset_materializations_for_node("condor__knowledge_tree")[0].metadata
    assert meta["dropped_names"].value == {"repeats_ancestor": 2}
    assert sorted(tree.filter(pl.col("is_leaf"))["path_text"]) == [
        "婚恋情感 > 犬类训练 > 猫咪健康",
        "婚恋情感 > 猫咪健康 > 犬类训练",
    ]
    world.sync_tags()
    keys = world.tags()
    assert len(keys) == 2 and all(PARTITION_KEY_PATTERN.match(k) for k in keys)
    config = {"ops": {"condor__raw_questions": {"config": {"structured_output": False}}}}
    assert world.materialize_tags(keys, run_config=config).success
    raw = world.read("raw_questions", keys[0])
    assert raw["drop_reason"].null_count() == 21  # all parsed from the [Easy] markup
    easy = raw.filter(pl.col("origin").struct.field("difficulty") == "easy")
    assert easy["text"].str.starts_with("小狗").all()
    assert raw["lineage"].struct.field("prompt_name").unique().to_list() == ["condor/questions/zh"]
    answers = world.read("draft_answers", keys[0])
    assert answers["lineage"].struct.field("prompt_name").unique().to_list() == ["shared/answer/zh"]
