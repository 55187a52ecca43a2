"""`condor trace`: walk refined answers, drafts, questions and tags back to the tree, on Parquet
written by a real materialization (scripted LLM, English and Chinese tags, planted duplicates)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from condor_dagster.cli import main
from condor_dagster.core.prompts import load_prompt
from condor_dagster.core.trace import Trace, TraceError, format_trace, trace, trace_to_dict
from condor_dagster.methods import traces  # noqa: F401  (registers the methods' stages)
from condor_dagster.resources.scripted_llm import ScriptRule

from .conftest import CRITIQUE_WITH_WEAKNESS, REWRITE, SCRIPTED_RULES, make_world, scripted_llm

TAXONOMY = "roots:\n  - Pets\n  - name: 人工智能\n    language: zh\n"
RULES = [
    CRITIQUE_WITH_WEAKNESS,
    REWRITE,
    ScriptRule(
        pattern="请从三个方面点评",
        response='{"strengths": ["清楚"], "weaknesses": ["缺少例子"], '
        '"suggestions": ["加一个例子"]}',
    ),
    ScriptRule(pattern="以下是对你的回答的反馈", response="改进后的回答 {seed}。"),
    ScriptRule(pattern="子主题", response='{"names": ["机器学习 {seed}"]}'),
    ScriptRule(
        pattern="三个难度",
        response='{"easy": "什么是监督学习？", "medium": "监督学习是什么意思？", '
        '"hard": "为什么深度模型在 {seed} 条样本上会过拟合，如何缓解？"}',
    ),
    SCRIPTED_RULES[2],  # English tree expansion
    # The medium question is a near-duplicate of the easy one; the hard one is unique per task.
    ScriptRule(
        pattern="three questions",
        response='{"easy": "How do I train my puppy to sit?", '
        '"medium": "How can I teach my puppy to sit down?", '
        '"hard": "Why does approach {seed} fail under heavy load, and what would fix it?"}',
    ),
]


@dataclass
class Data:
    data_dir: Path
    """What a user passes as --data-dir (assets/ lies inside)."""
    assets: Path
    tree_run_id: str
    tag_run_id: str
    en_tag: str
    zh_tag: str

    def read(self, asset: str, key: str) -> pl.DataFrame:
        return pl.read_parquet(self.assets / "condor" / asset / f"{key}.parquet")

    def row(self, asset: str, key: str, **match: Any) -> dict[str, Any]:
        frame = self.read(asset, key)
        for column, value in match.items():
            frame = frame.filter(pl.col(column) == value)
        return frame.row(0, named=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Data]:
    root = tmp_path_factory.mktemp("trace")
    with pytest.MonkeyPatch.context() as mp:
        world = make_world(root, mp, scripted_llm(root / "cache.sqlite3", rules=RULES))
        taxonomy = root / "taxonomy.yaml"
        taxonomy.write_text(TAXONOMY, encoding="utf-8")
        tree_run = world.materialize_tree(
            taxonomy_path=str(taxonomy),
            languages=["en", "zh"],
            subdomains_per_root=1,
            leaves_per_subdomain=1,
        )
        assert tree_run.success
        world.sync_tags()
        keys = world.tags()
        tree = world.read("knowledge_tree").filter(pl.col("is_leaf"))
        by_language = dict(zip(tree["language"], tree["node_id"], strict=True))
        assert sorted(by_language) == ["en", "zh"] and sorted(keys) == sorted(by_language.values())
        tag_run = world.materialize_tags(keys)
        assert tag_run.success
        yield Data(
            data_dir=root,
            assets=world.assets_dir,
            tree_run_id=tree_run.run_id,
            tag_run_id=tag_run.run_id,
            en_tag=by_language["en"],
            zh_tag=by_language["zh"],
        )


def _run_ids(found: Trace) -> set[str]:
    lineages = [s.lineage for s in found.steps]
    for r in found.rounds:
        lineages += [r.critique_lineage, r.answer_lineage]
    return {lineage.run_id for lineage in lineages if lineage is not None}


def test_refined_answer_traces_back_to_its_tag_with_every_decision(data: Data):
    refined = data.row("refined_answers", data.en_tag)
    draft = data.row("draft_answers", data.en_tag, id=refined["parent_id"])
    question = data.row("raw_questions", data.en_tag, id=draft["parent_id"])

    found = trace(refined["id"], data.data_dir)

    assert [s.stage for s in found.steps] == [
        "condor/refined_answers",
        "condor/draft_answers",
        "condor/raw_questions",
    ]
    assert [s.id for s in found.steps] == [refined["id"], draft["id"], question["id"]]
    assert [s.text for s in found.steps] == [refined["answer"], draft["answer"], question["text"]]
    # The tree chain ends at the question's tag and spells the tag path from the root.
    assert found.partition_key == question["parent_id"] == data.en_tag
    assert (
        [n.name for n in found.origin_chain]
        == refined["origin"]["tag_path"].split(" > ")
        == found.origin_path
    )
    assert found.origin_chain[0].parent_id is None and found.origin_chain[0].name == "Pets"
    assert found.origin_chain[-1].node_id == data.en_tag and found.origin_chain[-1].is_leaf
    assert [n.source for n in found.origin_chain] == ["seed", "llm", "llm"]
    assert found.chain == [
        refined["id"],
        draft["id"],
        question["id"],
        *[n.node_id for n in reversed(found.origin_chain)],
    ]
    # Dedup decision and the refinement round (critique, then rewrite).
    assert found.dedup is not None and found.dedup.question_id == question["id"]
    assert found.dedup.kept and found.dedup.drop_reason is None
    (round_one,) = found.rounds
    assert round_one.weaknesses == ["no example"]
    assert round_one.suggestions == ["add an example"]
    assert round_one.answer == refined["answer"] != draft["answer"]
    # Every LLM call names its prompt version, model, sampling, seed and run.
    refined_step, draft_step, question_step = found.steps
    assert refined_step.lineage and draft_step.lineage and question_step.lineage
    assert refined_step.lineage.prompt_sha == load_prompt("shared/refine", "en").sha
    assert round_one.critique_lineage.prompt_sha == load_prompt("shared/critique", "en").sha
    assert draft_step.lineage.prompt_sha == load_prompt("shared/answer", "en").sha
    assert question_step.lineage.prompt_sha == load_prompt("condor/questions", "en").sha
    assert question_step.lineage.seed == question["lineage"]["seed"]
    assert json.loads(draft_step.lineage.sampling) == json.loads(draft["lineage"]["sampling"])
    assert _run_ids(found) == {data.tag_run_id}
    llm_nodes = [n for n in found.origin_chain if n.source == "llm"]
    assert all(n.lineage for n in llm_nodes) and found.origin_chain[0].lineage is None
    assert {n.lineage.prompt_sha for n in llm_nodes if n.lineage} == {
        load_prompt("condor/tree_expand", "en").sha
    }
    assert {n.lineage.run_id for n in llm_nodes if n.lineage} == {data.tree_run_id}
    assert found.warnings == []


def test_draft_and_question_ids_trace_from_their_own_stage(data: Data):
    draft = data.row("draft_answers", data.en_tag)
    from_draft = trace(draft["id"], data.assets)  # the assets folder itself works too
    assert [s.stage for s in from_draft.steps] == ["condor/draft_answers", "condor/raw_questions"]
    assert [s.id for s in from_draft.steps] == [draft["id"], draft["parent_id"]]
    assert from_draft.rounds == [] and from_draft.dedup and from_draft.dedup.kept
    assert from_draft.origin_chain[-1].node_id == data.en_tag

    from_question = trace(draft["parent_id"], data.data_dir)
    assert [s.id for s in from_question.steps] == [draft["parent_id"]]
    assert from_question.steps[0].text == draft["question"]
    assert from_question.chain == from_draft.chain[1:]
    assert from_question.origin["task"] == draft["origin"]["task"]


def test_near_duplicate_question_shows_the_question_it_duplicates(data: Data):
    dropped = data.row("deduplicated_questions", data.en_tag, drop_reason="near_duplicate")
    original = data.row("deduplicated_questions", data.en_tag, id=dropped["duplicate_of"])

    found = trace(dropped["id"], data.data_dir)

    assert found.dedup is not None and not found.dedup.kept
    assert found.dedup.drop_reason == "near_duplicate"
    assert found.dedup.duplicate_of == original["id"]
    assert found.dedup.duplicate_text == original["text"]
    assert found.dedup.similarity == pytest.approx(dropped["similarity"])
    assert [s.id for s in found.steps] == [dropped["id"]]  # never drafted
    text = format_trace(found)
    assert "dropped, near_duplicate" in text
    assert f"duplicate of {original['id']}, similarity {dropped['similarity']:.3f}" in text


def test_tag_id_traces_its_tree_path(data: Data):
    found = trace(data.en_tag, data.data_dir)
    assert found.stage == "condor/knowledge_tree" and found.steps == []
    assert found.origin_chain[-1].node_id == data.en_tag and found.origin_path[0] == "Pets"
    root = trace(found.origin_chain[0].node_id, data.data_dir)
    assert [n.name for n in root.origin_chain] == ["Pets"] and root.chain == [
        found.origin_chain[0].node_id
    ]


def test_cjk_tag_path_traces_end_to_end(data: Data, capsys: pytest.CaptureFixture[str]):
    refined = data.row("refined_answers", data.zh_tag)
    found = trace(refined["id"], data.data_dir)
    assert found.language == "zh"
    assert found.origin_path == refined["origin"]["tag_path"].split(" > ")
    assert found.origin_path[0] == "人工智能" and found.origin_path[1].startswith("机器学习")
    assert found.origin_chain[-1].node_id == data.zh_tag
    assert found.rounds[0].weaknesses == ["缺少例子"]
    assert found.rounds[0].critique_lineage.prompt_sha == load_prompt("shared/critique", "zh").sha
    assert found.steps[0].text.startswith("改进后的回答")

    assert main(["trace", refined["id"], "--data-dir", str(data.data_dir)]) == 0
    out = capsys.readouterr().out
    assert " > ".join(found.origin_path) in out and "缺少例子" in out
    assert main(["trace", refined["id"], "--json", "--data-dir", str(data.data_dir)]) == 0
    out = capsys.readouterr().out
    assert "人工智能" in out  # not \\u-escaped
    assert json.loads(out)["origin_path"] == found.origin_path


def test_cli_prints_the_chain_stage_by_stage(data: Data, capsys: pytest.CaptureFixture[str]):
    refined = data.row("refined_answers", data.en_tag)
    found = trace(refined["id"], data.data_dir)

    assert main(["trace", refined["id"], "--data-dir", str(data.data_dir)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = captured.out
    positions = [out.index(i) for i in found.chain]  # every id, rows then the tree leaf -> root
    assert positions[:3] == sorted(positions[:3])
    assert " > ".join(found.origin_path) in out
    assert "weaknesses:\n        - no example" in out
    assert f"critique/en sha {load_prompt('shared/critique', 'en').sha}" in out
    assert f"questions/en sha {load_prompt('condor/questions', 'en').sha}" in out
    assert f"run {data.tag_run_id} at " in out
    assert f"seed {found.steps[1].lineage.seed}" in out  # type: ignore[union-attr]
    assert "temperature=" in out and "dedup: kept" in out


def test_long_texts_are_cut_unless_asked_whole(data: Data):
    refined = data.row("refined_answers", data.en_tag)
    found = trace(refined["id"], data.data_dir)
    answer = found.steps[0].text
    short = format_trace(found, max_chars=5)
    assert f"answer: {answer[:5]}… [{len(answer) - 5} more characters]" in short
    assert f"answer: {answer}\n" in format_trace(found, max_chars=None)


def test_control_characters_in_model_text_are_shown_escaped(data: Data):
    found = trace(data.row("refined_answers", data.en_tag)["id"], data.data_dir)
    noisy = found.steps[0].model_copy(update={"text": "red \x1b[31m alert\u202e\x07 end"})
    text = format_trace(found.model_copy(update={"steps": [noisy, *found.steps[1:]]}))
    assert "answer: red \\x1b[31m alert\\u202e\\x07 end" in text
    assert not any(c in text for c in "\x1b\u202e\x07")


def test_cli_json_has_the_same_chain(data: Data, capsys: pytest.CaptureFixture[str]):
    refined = data.row("refined_answers", data.en_tag)
    found = trace(refined["id"], data.data_dir)

    assert main(["trace", refined["id"], "--json", "--data-dir", str(data.data_dir)]) == 0
    parsed = json.loads(capsys.readouterr().out)

    assert parsed == json.loads(json.dumps(trace_to_dict(found)))
    assert [s["id"] for s in parsed["steps"]] + [
        n["node_id"] for n in reversed(parsed["origin_chain"])
    ] == found.chain
    assert parsed["chain"] == found.chain
    assert parsed["dedup"]["kept"] is True
    assert parsed["rounds"][0]["weaknesses"] == ["no example"]
    lineage = parsed["steps"][1]["lineage"]
    assert lineage["run_id"] == data.tag_run_id
    assert isinstance(lineage["sampling"], dict) and "temperature" in lineage["sampling"]
    created = dt.datetime.fromisoformat(lineage["created_at"])
    assert created.tzinfo is not None


@pytest.mark.parametrize(
    ("bad_id", "message"),
    [
        (
            "r-00000000000000000000",
            "no row with id 'r-00000000000000000000' in {assets}/condor/refined",
        ),
        ("a-123", "no row with id 'a-123' in {assets}/condor/draft_answers (2 files)"),
        (
            "q-ffffffffffffffffffff",
            "no row with id 'q-ffffffffffffffffffff' in {assets}/condor/raw_",
        ),
        ("nope.12345678", "'nope.12345678' is not in {assets}/condor/knowledge_tree.parquet ("),
        ("not an id!", "'not an id!' is not an id"),
    ],
)
def test_unknown_id_exits_1_with_a_clear_message(
    data: Data, capsys: pytest.CaptureFixture[str], bad_id: str, message: str
):
    assert main(["trace", bad_id, "--data-dir", str(data.data_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message.format(assets=data.assets) in captured.err
    assert "ids look like " in captured.err and "r-… (condor/refined_answers)" in captured.err
    assert "Traceback" not in captured.err
    with pytest.raises(TraceError) as raised:
        trace(bad_id, data.data_dir)
    assert isinstance(raised.value, ValueError)


def test_missing_data_dir_exits_1_and_says_how_to_make_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    missing = tmp_path / "nowhere"
    assert main(["trace", "r-00000000000000000000", "--data-dir", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"{missing} does not exist" in err and "make demo" in err
    assert "Traceback" not in err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["trace", "r-00000000000000000000", "--data-dir", str(empty)]) == 1
    err = capsys.readouterr().err
    assert f"no pipeline data in {empty}" in err and "make demo" in err


def test_default_data_dir_comes_from_the_environment(
    data: Data, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    refined = data.row("refined_answers", data.en_tag)
    monkeypatch.setenv("CONDOR_ASSETS_DIR", str(data.assets))
    assert trace(refined["id"]).steps[0].id == refined["id"]
    monkeypatch.delenv("CONDOR_ASSETS_DIR")
    monkeypatch.setenv("CONDOR_DATA_DIR", str(data.data_dir))
    assert main(["trace", refined["id"]]) == 0
    assert refined["id"] in capsys.readouterr().out


def test_a_missing_link_ends_the_chain_with_a_warning(data: Data, tmp_path: Path):
    copy = tmp_path / "assets"
    shutil.copytree(data.assets, copy)
    (copy / "condor" / "draft_answers" / f"{data.en_tag}.parquet").unlink()
    refined = data.row("refined_answers", data.en_tag)

    found = trace(refined["id"], copy)

    # The refined row also names its question, so the chain skips the missing draft.
    assert [s.stage for s in found.steps] == ["condor/refined_answers", "condor/raw_questions"]
    assert [s.id for s in found.steps] == [refined["id"], refined["question_id"]]
    (warning,) = found.warnings
    assert refined["parent_id"] in warning and str(copy / "condor" / "draft_answers") in warning
    assert found.dedup is not None and found.dedup.kept

    # Without the question either, the chain stops at the refined answer.
    (copy / "condor" / "raw_questions" / f"{data.en_tag}.parquet").unlink()
    alone = trace(refined["id"], copy)
    assert [s.id for s in alone.steps] == [refined["id"]]
    assert alone.dedup is None and "the chain stops there" in alone.warnings[0]
    assert alone.origin_chain[-1].node_id == data.en_tag
    # The tag still resolves from the row itself.
    assert found.origin_chain[-1].node_id == data.en_tag
    assert found.origin_path == refined["origin"]["tag_path"].split(" > ")
    assert f"warning: {warning}" in format_trace(found)
