"""AugCon end to end on a scripted LLM (controlled text) over a real corpus folder, the real
embedding model, the real scorer training and real Parquet: the sensor's shards, the tree, the
scorer, the ROUGE-L filter, demos, grounded answers, candidates, sft_dataset and trace; a rerun
generates nothing and a new file adds one shard and one run. (The real engine runs the same
chain in tests/engine/test_augcon_engine.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from condor_dagster.core.trace import trace
from condor_dagster.methods import traces
from condor_dagster.methods.augcon.assets import SHARD_ASSETS, SHARED_ASSETS
from condor_dagster.methods.augcon.definitions import augcon_sensor
from condor_dagster.methods.corpus.assets import CORPUS_ASSETS
from condor_dagster.methods.corpus.resource import CorpusResource
from condor_dagster.methods.corpus.sensors import sync_corpus
from condor_dagster.methods.dataset import DATASET_ASSETS, sft_dataset
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.query_scorer import QueryScorerResource
from condor_dagster.resources.scripted_llm import ScriptedLLMResource, ScriptRule

del traces  # imported for its registrations
MILL_1 = "The Zorblatt mill opens its sluice at dawn to let the river water run through the wheel."
MILL_2 = "It closes the sluice at dusk so that the pond fills again overnight."
FILLER = [
    f"Paragraph {n} is about the weather in the valley, which changes from season to season "
    f"and shapes how the villagers plan their work in the fields and the orchards, year {n}."
    for n in range(1, 5)
]
ZH_1 = "佐布拉特磨坊在黎明时打开水闸，让河水流过水轮，带动石磨研磨村里收获的谷物和豆子。"
ZH_2 = (
    "到了黄昏，磨坊关闭水闸，使水塘在夜里重新蓄满，以便第二天清晨继续工作；"
    "看守磨坊的老人关闸之后还会沿着水渠巡视一遍，检查有没有漏水的地方。"
)
ZH_FILLER = (
    "这座磨坊已经运转了两百多年，至今仍由村民轮流看管、清理水渠并维修水轮和石磨，"
    "每年秋收之后还会举办一次庆祝活动，邀请邻村的人们一同参加，大家会在磨坊前的空地上摆开长桌，"
    "分享新磨的面粉做成的点心。"
)
GROUNDED = "The mill opens the sluice at dawn and closes it at dusk."


def split(question: str, part_1: str, part_2: str) -> str:
    return json.dumps({"question": question, "part_1": part_1, "part_2": part_2})


def rules() -> list[ScriptRule]:
    def context(text: str, label: str = "Passage:") -> str:
        return rf"{label}\n{__import__('re').escape(text)}\n\n"

    return [
        # Self-check, grounded answers (demos and the mill's context in the prompt), the demo
        # answers (no demos yet): first, as the answer prompt holds a passage too.
        ScriptRule(pattern="Reference answer:|参考答案：", response='{"verdict": "yes"}'),
        ScriptRule(
            pattern=r"(?s)(?:Examples of good answers:|好的回答示例：)\n\n\[1\]"
            r".*(?:sluice|水闸|水塘)",
            response=GROUNDED,
        ),
        ScriptRule(pattern="No examples|暂无示例", response="An answer taken from the passage."),
        # The tree: the mill paragraph splits into its sentences, which stop (a part as long
        # as the parent); the root's question repeats in later passes (ROUGE-L duplicates).
        ScriptRule(
            pattern=context(MILL_1),
            response=split("Why does the Zorblatt mill open its sluice at dawn?", MILL_1, "x"),
        ),
        ScriptRule(
            pattern=context(MILL_2),
            response=split("What happens to the mill pond overnight?", MILL_2, "x"),
        ),
        ScriptRule(
            pattern=context(f"{MILL_1} {MILL_2}"),
            response=split(
                "In pass {sample_index}, when does the Zorblatt mill open and close its sluice?",
                MILL_1,
                MILL_2,
            ),
        ),
        ScriptRule(
            pattern=context(ZH_1 + ZH_2, "段落："),
            response=split("佐布拉特磨坊什么时候打开和关闭水闸？", ZH_1, ZH_2),
        ),
        ScriptRule(
            pattern=context(ZH_1, "段落："), response=split("磨坊为什么在黎明打开水闸？", ZH_1, "x")
        ),
        ScriptRule(
            pattern=context(ZH_2, "段落："), response=split("水塘在夜里会怎样？", ZH_2, "x")
        ),
        # The scorer's triplets: three examples give a specific question, fewer or the vague
        # prompt a vague one.
        ScriptRule(
            pattern=r"(?s)\[3\].*(A good question:|好的问题应当)",
            response='{"question": "Which event makes the mill open its sluice, and why then?"}',
        ),
        ScriptRule(pattern="A good question:|好的问题应当", response='{"question": "What is it?"}'),
        ScriptRule(
            pattern="Write a question about the text|就这段文本写一个问题",
            response='{"question": "What is this text about?"}',
        ),
    ]


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "en-US").mkdir(parents=True)
    (root / "zh-CN").mkdir(parents=True)
    (root / "en-US" / "mill.txt").write_text(
        "\n".join([f"{MILL_1} {MILL_2}", *FILLER]) + "\n", encoding="utf-8"
    )
    (root / "zh-CN" / "mill.html").write_text(
        f"<html><body><p>{ZH_1}{ZH_2}</p><p>{ZH_FILLER}</p></body></html>", encoding="utf-8"
    )
    return root


def resources(tmp_path: Path, corpus_dir: Path) -> dict[str, Any]:
    return {
        "llm": ScriptedLLMResource(
            rules=rules(),
            default_response="A scripted answer.",
            cache_path=str(tmp_path / "cache.sqlite3"),
        ),
        "embeddings": SentenceTransformerEmbeddings(),
        "io_manager": ParquetIOManager(base_dir=str(tmp_path / "assets")),
        "corpus": CorpusResource(path=str(corpus_dir)),
        "query_scorer": QueryScorerResource(threads=2),
    }


EVERYTHING = DATASET_ASSETS
SHARD_RUN = [*CORPUS_ASSETS, *SHARD_ASSETS]
# Two draws: the scripted text is the same in both, so each triplet is kept once.
RUN_CONFIG = {"ops": {"augcon__scorer_triplets": {"config": {"per_type": 20, "draws": 2}}}}


def run(
    instance: dg.DagsterInstance, res: dict[str, Any], selection: list[Any], keys: list[str] | None
) -> dg.ExecuteInProcessResult:
    tags = (
        {
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        }
        if keys
        else None
    )
    return dg.materialize(
        EVERYTHING,
        selection=selection,
        resources=res,
        instance=instance,
        tags=tags,
        run_config=RUN_CONFIG if selection == SHARED_ASSETS else None,
    )


def meta(result: dg.ExecuteInProcessResult, name: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(f"augcon__{name}")[:1]
    return {k: v.value for k, v in materialization.metadata.items()}


def test_augcon_end_to_end_on_a_scripted_llm(
    tmp_path: Path, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONDOR_DATA_DIR", str(tmp_path / "data"))
    instance = dg.DagsterInstance.ephemeral()
    res = resources(tmp_path, corpus_dir)
    store = res["io_manager"].store()

    synced = sync_corpus(instance, res["corpus"], augcon_sensor)
    keys = sorted(instance.get_dynamic_partitions("corpus_shards"))
    assert keys == ["en-us.mill.txt", "zh-cn.mill.html"]
    assert sorted(r.partition_key for r in synced.run_requests or []) == keys
    tree_part = [a for a in SHARD_RUN if a.key.path[-1] in ("documents", "chunks", "context_tree")]

    # documents -> chunks -> tree for both shards in one run, then the scorer and the demos.
    assert run(instance, res, tree_part, keys).success
    shared = run(instance, res, SHARED_ASSETS, None)
    assert shared.success
    result = run(instance, res, SHARD_RUN, keys)
    assert result.success

    tree = store.read(["augcon", "context_tree"], "en-us.mill.txt")
    mill = tree.filter(pl.col("origin").struct.field("context").str.starts_with(MILL_1))
    roots = mill.filter(pl.col("origin").struct.field("depth") == 0).sort("sample_index")
    # 3 questions a tree, target ceil(4 * 1.15) = 5: a second pass, then enough.
    assert roots["sample_index"].to_list() == [0, 1]
    assert roots["stop_reason"].to_list() == ["split", "split"]
    assert set(mill.filter(pl.col("origin").struct.field("depth") == 1)["stop_reason"]) == {
        "part_not_shorter"
    }
    filler = tree.filter(pl.col("origin").struct.field("context").str.starts_with("Paragraph 1 "))
    assert filler["drop_reason"].to_list() == ["parse_failed"] * 3  # max_passes trees, none usable

    chunks = sum(store.read(["augcon", "chunks"], k).height for k in keys)
    triplets = store.read(["augcon", "scorer_triplets"])
    assert triplets.height == 3 * chunks and triplets["id"].n_unique() == triplets.height
    scorer = store.read(["augcon", "query_scorer"])
    scorer_meta = meta(shared, "query_scorer")
    assert scorer_meta["heldout_accuracy"] == scorer["heldout_accuracy"][0]
    assert scorer_meta["heldout_accuracy"] >= 0.9  # vague negatives against specific positives
    assert Path(scorer["model_dir"][0], "scorer.json").is_file()
    demos = store.read(["augcon", "answer_demos"])
    assert demos.group_by("language").agg(pl.col("kept").sum()).sort("language").rows() == [
        ("en", 3),
        ("zh", 3),
    ]
    assert set(demos.filter(~pl.col("kept"))["drop_reason"]) == {"over_quota"}

    filtered = store.read(["augcon", "filtered_questions"], "en-us.mill.txt")
    assert set(filtered["id"]) <= set(tree["id"])  # a pass-through: the tree's ids
    duplicates = filtered.filter(pl.col("drop_reason") == "rouge_duplicate")
    assert duplicates.height == 3  # pass 1 repeats pass 0's three questions
    assert set(duplicates["collided_with"]) <= set(
        filtered.filter(pl.col("drop_reason").is_null())["id"]
    )
    assert filtered.filter(pl.col("drop_reason").is_null()).height == 3
    assert meta(result, "filtered_questions")["quota_met_rate"] < 1.0  # 3 of quota 4

    answers = store.read(["augcon", "grounded_answers"], "en-us.mill.txt")
    assert answers.height == 3 and set(answers["answer"]) == {GROUNDED}  # demos + context
    assert answers["lineage"].struct.field("prompt_name").unique().to_list() == ["augcon/answer/en"]
    zh = store.read(["augcon", "sft_candidates"], "zh-cn.mill.html")
    assert zh.height == 3 and set(zh["variant"]) == {"grounded"}

    # The export: AugCon beside a Condor that was never materialized.
    out = tmp_path / "exports"
    export = dg.materialize(
        EVERYTHING,
        selection=[sft_dataset],
        resources=res,
        instance=instance,
        run_config={"ops": {"sft_dataset": {"config": {"export_dir": str(out)}}}},
    )
    assert export.success
    records = [
        json.loads(line)
        for line in (out / "augcon" / "sft_grounded.messages.jsonl").read_text().splitlines()
    ]
    assert records and all(r["context"] and r["source"] for r in records)
    sample = store.read(["sft_dataset"]).filter(pl.col("method") == "augcon")["id"][0]
    traced = trace(sample, tmp_path / "assets")
    assert traced.chain[-1].startswith("d-") and traced.chain[-2].startswith("ck-")
    assert traced.origin_path[0].startswith("en-US/mill.txt") or traced.origin_path[0].startswith(
        "zh-CN/mill.html"
    )
    assert traced.dedup is not None and traced.dedup.kept

    # A rerun of the shards generates nothing (the cache answers) and gives the same ids.
    ids = {k: store.read(["augcon", "sft_candidates"], k)["id"].sort().to_list() for k in keys}
    again = run(instance, res, SHARD_RUN, keys)
    assert again.success
    for stage in ("context_tree", "grounded_answers"):
        figures = meta(again, stage)
        assert figures["cache_misses"] == 0 and figures["cache_hits"] > 0, stage
    assert {
        k: store.read(["augcon", "sft_candidates"], k)["id"].sort().to_list() for k in keys
    } == ids

    # A new corpus file: exactly one new shard and one run for it.
    (corpus_dir / "en-US" / "more.txt").write_text(FILLER[0] + "\n", encoding="utf-8")
    later = sync_corpus(instance, res["corpus"], augcon_sensor, cursor=synced.cursor)
    assert [r.partition_key for r in later.run_requests or []] == ["en-us.more.txt"]
    assert sorted(instance.get_dynamic_partitions("corpus_shards")) == [
        *keys[:1],
        "en-us.more.txt",
        keys[1],
    ]
