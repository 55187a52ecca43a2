"""Quality gates (core/quality.py): planted cases in English and Chinese, the real SmolLM2
outputs in tests/fixtures/smollm2_outputs.json, and the wiring into each stage."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from condor_dagster.core.export import with_keep_decisions
from condor_dagster.core.language import is_chinese, prompt_language
from condor_dagster.core.llm import Completion, LLMRequest, SamplingParams
from condor_dagster.core.quality import (
    QUALITY_PROBLEMS,
    answer_problem,
    question_problem,
    repetition_problem,
    strip_meta_preamble,
    tree_name_problem,
)
from condor_dagster.core.quality import answer_drop_reason as drop_reason
from condor_dagster.core.refine import Critique, DraftToRefine, refine_answers, rewrite_gate
from condor_dagster.methods.condor.questions import Tag, question_jobs, question_rows
from condor_dagster.methods.condor.records import QuestionTriple, TagNames
from condor_dagster.methods.condor.taxonomy import TreeNode
from condor_dagster.methods.condor.tree import expand_tree, expansion_request

FIXTURE = Path(__file__).parent.parent / "fixtures" / "smollm2_outputs.json"


def draft_to_refine(
    *,
    language: str = "en",
    question: str = "How often should I walk my dog?",
    answer: str = "Walk your dog.",
) -> DraftToRefine:
    """A draft_answers row (contract fields, Condor origin) ready to refine."""
    return DraftToRefine(
        {
            "id": "a-1",
            "parent_id": "q-1",
            "method": "condor",
            "partition_key": "pets.12345678",
            "language": language,
            "origin": {"tag_path": "Pets", "task": "daily_chat", "difficulty": "easy"},
            "question": question,
            "answer": answer,
            "truncated": False,
            "drop_reason": None,
        }
    )


NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


# ---- helpers -------------------------------------------------------------------------------------
def _completion(text: str, parsed: Any = None, finish_reason: str = "stop") -> Completion:
    return Completion(
        text=text,
        finish_reason=finish_reason,
        prompt_tokens=1,
        completion_tokens=len(text.split()),
        latency_s=0.0,
        model="scripted",
        engine="scripted",
        engine_version="0",
        seed=0,
        key="k",
        cached=False,
        parsed=parsed,
    )


def _prompt_text(path: Sequence[str], language: str, count: int = 3) -> str:
    node = TreeNode.from_path(list(path), language=language, source="seed", is_leaf=True)
    request = expansion_request(node, count, SamplingParams())
    return "\n".join(m.content for m in request.messages)


@cache
def _fixture() -> list[dict[str, Any]]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))["records"]


def _records(kind: str) -> list[dict[str, Any]]:
    return [r for r in _fixture() if r["kind"] == kind]


# ---- language codes ------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["zh", "zh-Hans", "zh-CN", "zh_TW", "ZH-hant"])
def test_every_chinese_code_is_chinese(code: str):
    assert is_chinese(code) and prompt_language(code) == "zh"


@pytest.mark.parametrize("code", ["en", "en-GB", "zhx", "ja", "pt-BR", ""])
def test_other_codes_are_not_chinese(code: str):
    assert not is_chinese(code) and prompt_language(code) == "en"


# ---- tree names ----------------------------------------------------------------------------------
ROOT = ["Marriage and Relationships"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("List 3 distinct, more specific sub-topics of", "echoes_instructions"),
        ("Taxonomy Paths", "echoes_instructions"),
        ("Sub-topics", "echoes_instructions"),
        ("Topics", "echoes_instructions"),
        ("tag names", "echoes_instructions"),
        ("Noun phrases", "echoes_instructions"),
        ("Marriage and Relationships sub-topics", "echoes_instructions"),
        ("marriage and relationships", "repeats_ancestor"),
        ("MARRIAGE & RELATIONSHIPS", "repeats_ancestor"),
        ("Marriage and Relationships > Dating", "repeats_ancestor"),
        # Real topics, some of whose words the prompt uses too: kept.
        ("Dating Apps", None),
        ("Long-distance relationships", None),
        ("Relationships", None),
        ("English Training", None),
        ("Career Path", None),
        ("Taxonomy", None),
        ("JSON", None),
        ("C++ / C# interop", None),
        ("Wedding planning 💍", None),
        ("<b>Couples</b> therapy", None),
    ],
)
def test_tree_name_gate_english(name: str, problem: str | None):
    assert tree_name_problem(name, ROOT, _prompt_text(ROOT, "en")) == problem


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("子主题", "echoes_instructions"),
        ("中文短语", "echoes_instructions"),
        ("当前分类路径", "echoes_instructions"),
        ("婚恋情感", "repeats_ancestor"),
        ("婚姻 > 婚恋情感", "repeats_ancestor"),
        ("恋爱技巧", None),
        ("训练", None),  # a word of the prompt, but a fine topic under a sports root
        ("异地恋/远距离恋爱", None),
    ],
)
def test_tree_name_gate_chinese(name: str, problem: str | None):
    assert tree_name_problem(name, ["婚恋情感"], _prompt_text(["婚恋情感"], "zh")) == problem


def test_deeper_levels_compare_against_every_ancestor():
    path = ["Pets", "Dog Care"]
    prompt = _prompt_text(path, "en")
    assert tree_name_problem("pets", path, prompt) == "repeats_ancestor"
    assert tree_name_problem("Dog care", path, prompt) == "repeats_ancestor"
    assert tree_name_problem("Dog grooming", path, prompt) is None


# ---- questions -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "What is the best age to adopt a puppy?",
        "How do I keep my cat from scratching the sofa",
        "Write a short poem about an old lighthouse keeper.",
        "Summarize the following text in two sentences: cats sleep up to 16 hours a day.",
        "You are a travel agent. Plan a three-day trip to Kyoto for a family of four.",
        "As a new pet owner, I'd like some advice on choosing a vet.",
        "In 100 words or less, explain why the sky is blue.",
        "Compare renting and buying a flat in Berlin, as a table.",
        "Imagine you are a medieval knight, and describe your morning.",
        "I'm looking for a good book on Stoicism.",
        "**Describe** the water cycle for a 10-year-old.",
        "<p>Give three tips for a first date.</p>",
        "Can you help with my résumé 📄",
        "请写一首关于猫的诗",
        "猫为什么喜欢睡觉",
        "你觉得远程工作怎么样",
        "假设你是一名医生，向病人解释高血压的风险。",
        "如何在家里种植番茄？",
    ],
)
def test_real_questions_and_requests_pass(text: str):
    assert (
        question_problem(text, "zh" if any("\u4e00" <= c <= "\u9fff" for c in text) else "en")
        is None
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("You should answer the question,", "not_a_question"),
        ("Pet nutrition", "not_a_question"),
        ("The best way to train a dog is consistency.", "not_a_question"),
        ("Domain Knowledge QA - questions that need expert knowledge", "not_a_question"),
        ("宠物营养", "not_a_question"),
        ("这是一个关于宠物的话题。", "not_a_question"),
        ("", "not_a_question"),
        ("What is love? " * 7, "degenerate_repetition"),
        ("为什么为什么为什么为什么为什么为什么", "degenerate_repetition"),
    ],
)
def test_non_questions_are_caught(text: str, problem: str):
    assert question_problem(text, "en") == problem


def test_a_chinese_row_with_an_english_question_is_still_a_question():
    assert question_problem("Explain how rice is grown.", "zh-Hans") is None


# ---- repetition ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "Your answer is perfect. " * 8,
        "ha " * 6,
        "very good, " * 6,
        "哈" * 6,
        "好的好的好的好的好的好的",
        "Step one. " + "I like it and I like it. " * 6,
        "\n".join(["- Keep it simple and short, as discussed before in the intro."] * 6),
    ],
)
def test_more_than_five_repeats_in_a_row_is_degenerate(text: str):
    assert repetition_problem(text) == "degenerate_repetition"


@pytest.mark.parametrize(
    "text",
    [
        "ha " * 5,
        "哈" * 5,
        "[0, 0, 0, 0, 0, 0, 0, 0]",  # code, digits only
        "1. Walk\n2. Feed\n3. Brush\n4. Play\n5. Rest\n6. Vet\n7. Love",
        "Very, very, very good.",
        "| Yes | No | Yes | No | Yes |",
        "It is what it is, and that is that.",
    ],
)
def test_ordinary_text_is_not_degenerate(text: str):
    assert repetition_problem(text) is None


# ---- meta preambles ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "answer", "preamble"),
    [
        (
            "Here's a rewritten version of your answer that addresses the weaknesses:\n\n"
            "Dogs need at least 30 minutes of exercise a day.",
            "Dogs need at least 30 minutes of exercise a day.",
            "Here's a rewritten version of your answer that addresses the weaknesses:",
        ),
        (
            "Sure! Here is the improved answer:\nCats sleep 12 to 16 hours a day.",
            "Cats sleep 12 to 16 hours a day.",
            "Sure! Here is the improved answer:",
        ),
        (
            "Thank you for the feedback! **Improved Answer:** Brush your dog weekly.",
            "Brush your dog weekly.",
            "Thank you for the feedback! **Improved Answer:**",
        ),
        (
            "我根据您的反馈修改了回答：\n\n猫每天需要睡十几个小时，这是正常的。",
            "猫每天需要睡十几个小时，这是正常的。",
            "我根据您的反馈修改了回答：",
        ),
        (
            "好的！以下是改进后的回答：\n番茄需要充足的阳光。",
            "番茄需要充足的阳光。",
            "好的！ 以下是改进后的回答：",
        ),
    ],
)
def test_a_recognised_preamble_is_stripped(text: str, answer: str, preamble: str):
    assert strip_meta_preamble(text, "en") == (answer, preamble, None)


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here is the improved answer:",
        "Thank you for the feedback",
        "Thank you for the feedback. I have revised my answer to address the weaknesses.",
        "Here's a rewritten version of your answer: Your answer is clear but lacks examples.",
        "感谢您的反馈！",
        "我根据您的反馈修改了回答：",
        # SmolLM2's grounded answers in the demo (AugCon): a lead-in and nothing after it
        "The answer is:",
        "The answer to the question is:\n\n",
        "答案是：",
    ],
)
def test_only_meta_commentary_is_a_problem(text: str):
    answer, preamble, problem = strip_meta_preamble(text, "en")
    assert problem == "meta_commentary" and preamble and answer == text


@pytest.mark.parametrize(
    "text",
    [
        "Dogs need daily walks.",
        "Here is a simple recipe: boil the pasta for 9 minutes.",
        "The answer is 42.",
        "Certainly the most important rule is patience.",
        "猫每天需要睡十几个小时。",
    ],
)
def test_plain_answers_are_untouched(text: str):
    assert strip_meta_preamble(text, "en") == (text, None, None)


def test_an_answer_after_a_lead_in_is_kept():
    text = (
        "The answer to the question is: The IT department can create a new user, and it "
        "affects software updates by ensuring regular software updates are available."
    )
    answer, preamble, problem = strip_meta_preamble(text, "en")
    assert problem is None and preamble == "The answer to the question is:"
    assert answer.startswith("The IT department")


# ---- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I apologize, but I cannot provide medical advice.",
        "As an AI language model, I do not have opinions.",
        "I cannot answer that question.",
        "Unfortunately I am unable to help with this request.",
        "抱歉，我无法回答这个问题。",
        "对不起，我不能提供这方面的信息。",
        "作为一个AI，我没有个人看法。",
        "作为人工智能，我不能判断。",
        "这个问题我无法回答。",
    ],
)
def test_refusals_are_caught_in_both_languages(text: str):
    assert answer_problem(text, "en") == "refusal"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry to hear that your dog is sick. Here is what to do first.",
        "I cannot stress enough how important sleep is.",
        "抱歉让您久等了，这是您点的咖啡。",  # a role-played waiter
        "The knight said: I cannot help but admire the view.",
    ],
)
def test_empathy_and_idioms_are_not_refusals(text: str):
    assert answer_problem(text, "en") is None


def test_export_drop_reason_uses_the_shared_gates():
    assert drop_reason("I'm sorry, but I can't help.", False, "stop") == "refusal"
    assert drop_reason("Your answer is perfect. " * 8, False, "stop") == "degenerate_repetition"
    assert drop_reason("Sure! Here is the improved answer:", False, "stop") == "meta_commentary"
    assert drop_reason("对不起，我无法回答。", False, "stop", language="zh-CN") == "refusal"
    assert drop_reason("Dogs need walks.", False, "stop") is None
    assert drop_reason("Dogs", True, "length") == "truncated"
    assert drop_reason(None, False, "rejected") == "rejected"


def test_both_export_variants_are_filtered_by_the_same_rules():
    texts = [
        "Dogs need daily walks.",
        "As an AI, I cannot have a pet.",
        "Great answer! " * 7,
        "Thank you for the feedback!",
        "抱歉，我无法回答这个问题。",
    ]
    # Candidates in the long format: the refine rows carry `texts`, the void rows the reverse.
    candidates = pl.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(5)] * 2,
            "variant": ["refine"] * 5 + ["void"] * 5,
            "answer": texts + texts[::-1],
            "truncated": [False] * 10,
            "finish_reason": ["stop"] * 10,
            "drop_reason": [None] * 10,
            "language": ["en", "en", "en", "en", "zh"] * 2,
        },
        schema_overrides={"drop_reason": pl.String},
    )
    decisions = pl.DataFrame(
        {"question_id": [f"q{i}" for i in range(5)], "question_dup_reason": [None] * 5},
        schema_overrides={"question_dup_reason": pl.String},
    )
    out = with_keep_decisions(candidates, decisions)
    expected = [None, "refusal", "degenerate_repetition", "meta_commentary", "refusal"]
    refine = out.filter(pl.col("variant") == "refine")
    void = out.filter(pl.col("variant") == "void")
    assert refine["drop_reason"].to_list() == expected
    # The gates read every text with both languages' patterns, whatever its language field.
    assert void["drop_reason"].to_list() == expected[::-1]
    assert refine["kept"].to_list() == [True, False, False, False, False]


def test_the_vocabulary_names_every_gate():
    assert set(QUALITY_PROBLEMS) == {
        "echoes_instructions",
        "repeats_ancestor",
        "not_a_question",
        "unfilled_placeholder",
        "degenerate_repetition",
        "meta_commentary",
        "refusal",
    }


# ---- wiring: pure stages with a scripted generate ---------------------------------------
def test_expand_tree_drops_echoes_and_ancestor_repeats_with_their_reasons():
    root = TreeNode.from_path(ROOT, language="en", source="seed", is_leaf=True)
    names = ["Sub-topics", "marriage and relationships", "Taxonomy Paths", "Dating Apps"]

    def generate(requests: Sequence[LLMRequest]) -> list[Completion]:
        return [_completion("{}", TagNames(names=names)) for _ in requests]

    expansion = expand_tree(
        [root],
        generate,
        depth=2,
        fan_out=[3],
        sampling=SamplingParams(),
        run_id="r",
        now=NOW,
    )
    assert [n.name for n in expansion.nodes if n.level == 1] == ["Dating Apps"]
    assert {(d.raw_name, d.reason) for d in expansion.drops} == {
        ("Sub-topics", "echoes_instructions"),
        ("marriage and relationships", "repeats_ancestor"),
        ("Taxonomy Paths", "echoes_instructions"),
    }


def test_question_rows_keep_non_questions_with_their_reason():
    tag = Tag("pets.12345678", "Pets", "zh-Hans")
    jobs = question_jobs([tag], 1, SamplingParams(), structured=True)[:1]
    triple = QuestionTriple(
        easy="You should answer the question,",
        medium="好的。" * 6,
        hard="猫为什么喜欢睡觉",
    )
    rows = question_rows(jobs, [_completion("{}", triple)], structured=True, run_id="r", now=NOW)
    assert [(r.origin.difficulty, r.drop_reason) for r in rows] == [
        ("easy", "not_a_question"),
        ("medium", "degenerate_repetition"),
        ("hard", None),
    ]
    assert rows[0].text == "You should answer the question,"  # kept for audit
    assert jobs[0].request.messages[0].content.startswith("你")  # zh-Hans gets the zh prompt


def _refine(rewrite: str, language: str = "en") -> Any:
    draft = draft_to_refine(language=language)
    critique = '{"strengths": ["short"], "weaknesses": ["vague"], "suggestions": ["be specific"]}'

    def generate(requests: Sequence[LLMRequest]) -> list[Completion]:

        if requests[0].schema is Critique:
            return [_completion(critique, Critique.model_validate_json(critique)) for _ in requests]
        return [_completion(rewrite) for _ in requests]

    (row,) = refine_answers(
        [draft],
        generate,
        rounds=2,
        stop_when_no_weaknesses=True,
        critique_sampling=SamplingParams(),
        answer_sampling=SamplingParams(),
        run_id="r",
        now=NOW,
    )
    return row


def test_refine_strips_a_meta_preamble_and_keeps_it_in_the_round():
    row = _refine("Sure! Here is the improved answer:\n\nWalk your dog twice a day, 30 minutes.")
    assert row.answer == "Walk your dog twice a day, 30 minutes."
    assert row.rounds[0].stripped_preamble == "Sure! Here is the improved answer:"
    assert row.rounds[0].answer == row.answer and row.rounds[0].rewrite_problem is None
    assert row.stop_reason == "max_rounds" and row.rounds_run == 2


@pytest.mark.parametrize(
    ("rewrite", "problem"),
    [
        ("Thank you for the feedback! I have revised my answer accordingly.", "meta_commentary"),
        ("我根据您的反馈修改了回答：", "meta_commentary"),
        ("I'm sorry, but I cannot help with that.", "refusal"),
        ("Your answer is perfect. " * 8, "degenerate_repetition"),
    ],
)
def test_refine_refuses_a_bad_rewrite_and_the_draft_stands(rewrite: str, problem: str):
    row = _refine(rewrite, language="zh-CN")
    assert row.answer == row.draft_answer == "Walk your dog."
    assert row.stop_reason == "rewrite_failed" and row.rounds_run == 1
    (round_one,) = row.rounds
    assert round_one.answer is None and round_one.rewrite_problem == problem
    assert round_one.rejected_answer == rewrite and round_one.answer_error.startswith(problem)


# ---- wiring: the assets, on a scripted LLM ---------------------------------------------
def _materialize_one_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rewrite: str) -> Any:
    """knowledge_tree, then every tag asset for its one tag; returns (runs, assets dir, key)."""
    import dagster as dg

    from condor_dagster.methods.condor.assets import CONDOR_ASSETS, TAG_ASSETS
    from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
    from condor_dagster.resources.parquet_io import ParquetIOManager
    from condor_dagster.resources.scripted_llm import ScriptedLLMResource, ScriptRule

    rules = [
        ScriptRule(
            pattern="Critique the answer",
            response='{"strengths": ["clear"], "weaknesses": ["no example"], '
            '"suggestions": ["add an example"]}',
        ),
        ScriptRule(pattern="Here is feedback on your answer", response=rewrite),
        ScriptRule(
            pattern="sub-topics",
            response='{"names": ["Sub-topics", "Marriage and Relationships", "Taxonomy Paths", '
            '"Dating {seed}"]}',
        ),
        ScriptRule(
            pattern="three questions",
            response='{"easy": "You should answer the question,", '
            '"medium": "Your answer is perfect. Your answer is perfect. Your answer is perfect. '
            'Your answer is perfect. Your answer is perfect. Your answer is perfect.", '
            '"hard": "Why does plan {seed} fail under load, and what would fix it?"}',
        ),
    ]
    assets_dir = tmp_path / "assets"
    monkeypatch.setenv("CONDOR_ASSETS_DIR", str(assets_dir))
    instance = dg.DagsterInstance.ephemeral()
    resources = {
        "llm": ScriptedLLMResource(
            rules=rules, default_response="A scripted answer.", cache_path=str(tmp_path / "c.db")
        ),
        "embeddings": SentenceTransformerEmbeddings(),
        "io_manager": ParquetIOManager(base_dir=str(assets_dir)),
    }
    tree_config = {"max_roots": 1, "subdomains_per_root": 1, "leaves_per_subdomain": 1}
    tree = dg.materialize(
        [CONDOR_ASSETS[0]],
        resources=resources,
        instance=instance,
        run_config={"ops": {"condor__knowledge_tree": {"config": tree_config}}},
    )
    leaves = pl.read_parquet(assets_dir / "condor" / "knowledge_tree.parquet").filter(
        pl.col("is_leaf")
    )
    (key,) = leaves["node_id"].to_list()
    instance.add_dynamic_partitions("tags", [key])
    tags = dg.materialize(
        CONDOR_ASSETS,
        selection=TAG_ASSETS,
        resources=resources,
        instance=instance,
        partition_key=key,
    )
    return tree, tags, assets_dir, key


def _meta(result: Any, node: str) -> dict[str, Any]:
    metadata = result.asset_materializations_for_node(node)[0].metadata
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def test_assets_drop_and_count_each_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rewrite = "Sure! Here is the improved answer:\n\nWalk the dog daily, plan {seed}."
    tree, tags, assets_dir, key = _materialize_one_tag(tmp_path, monkeypatch, rewrite)

    # Two levels, each asked once: both echoes and the root repeat are dropped at each.
    expected_tree = {"echoes_instructions": 4, "repeats_ancestor": 2}
    assert _meta(tree, "condor__knowledge_tree")["dropped_names"] == expected_tree
    assert _meta(tree, "condor__knowledge_tree")["dropped_by_reason"] == expected_tree

    raw = pl.read_parquet(assets_dir / f"condor/raw_questions/{key}.parquet")
    assert Counter(raw["drop_reason"].fill_null("kept")) == {
        "kept": 7,
        "not_a_question": 7,
        "degenerate_repetition": 7,
    }
    assert set(raw.filter(pl.col("drop_reason") == "not_a_question")["text"]) == {
        "You should answer the question,"
    }
    raw_meta = _meta(tags, "condor__raw_questions")
    assert raw_meta["kept"] == 7
    assert raw_meta["dropped_by_reason"] == {"not_a_question": 7, "degenerate_repetition": 7}

    # Dedup carries the reasons, never keeps or embeds those rows, and counts them.
    dedup = pl.read_parquet(assets_dir / f"condor/deduplicated_questions/{key}.parquet")
    gated = dedup.filter(pl.col("drop_reason").is_in(["not_a_question", "degenerate_repetition"]))
    assert gated.height == 14 and not gated["kept"].any() and gated["embedding"].null_count() == 14
    dedup_meta = _meta(tags, "condor__deduplicated_questions")["dropped_by_reason"]
    assert dedup_meta["not_a_question"] == 7 and dedup_meta["degenerate_repetition"] == 7

    # Only real questions reached the drafts; every rewrite lost its preamble.
    drafts = pl.read_parquet(assets_dir / f"condor/draft_answers/{key}.parquet")
    assert drafts["question"].str.starts_with("Why does plan").all()
    refined = pl.read_parquet(assets_dir / f"condor/refined_answers/{key}.parquet")
    assert refined["answer"].str.starts_with("Walk the dog daily").all()
    preambles = refined["rounds"].list.eval(pl.element().struct.field("stripped_preamble"))
    assert set(preambles.explode()) == {"Sure! Here is the improved answer:"}
    refined_meta = _meta(tags, "condor__refined_answers")
    assert refined_meta["preambles_stripped"] == refined.height == refined_meta["rewrites_used"]
    assert refined_meta["rewrites_refused_by_reason"] == {}


def test_an_only_meta_rewrite_leaves_the_draft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rewrite = "Thank you for the feedback! I have revised my answer accordingly."
    _, tags, assets_dir, key = _materialize_one_tag(tmp_path, monkeypatch, rewrite)
    refined = pl.read_parquet(assets_dir / f"condor/refined_answers/{key}.parquet")
    assert refined.height > 0
    assert refined["answer"].to_list() == refined["draft_answer"].to_list()
    assert (refined["stop_reason"] == "rewrite_failed").all()
    problems = refined["rounds"].list.eval(pl.element().struct.field("rewrite_problem"))
    assert set(problems.explode()) == {"meta_commentary"}
    meta = _meta(tags, "condor__refined_answers")
    assert meta["rewrites_refused_by_reason"] == {"meta_commentary": refined.height}
    assert meta["rewrites_used"] == 0
    # The drafts stand, and they are fine answers: every row stays a candidate.
    assert meta["kept"] == refined.height and meta["dropped_by_reason"] == {}


# ---- gates added after reading the real SmolLM2 outputs --------------------------------------
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[Easy, Question: 什么？", "echoes_instructions"),
        ("[Hard] Why do cats purr?", "echoes_instructions"),
        ("How to create a career in [industry] without leaving [home]?", "unfilled_placeholder"),
        ("how to reduce stress and put your [favorite hobby] to the test.", "unfilled_placeholder"),
        # Brackets that are not template slots.
        ("Is [x] the right checkbox syntax in GitHub Markdown?", None),
        ("What does [QM] mean in a forum title?", None),
        ("Explain what [the docs](https://docs.python.org) say about asyncio.", None),
    ],
)
def test_question_markup_echoes_and_placeholders(text: str, problem: str | None):
    assert question_problem(text, "en") == problem


@pytest.mark.parametrize(
    "text",
    [
        "“Founder of FantasyFanFanFanFanFanFanFanFan”",
        "你是谁；；；；；；；；；；；；；；；；；；；；；；；；",
        "Total: 1111111111111111111111111111111",
        "## Plan\n\n### ＋\n\n### ＋\n\n### ＋\n\n### ＋\n\n### ＋\n\n### ＋\n\n### ＋",
    ],
)
def test_real_kinds_of_degenerate_text(text: str):
    assert repetition_problem(text) == "degenerate_repetition"


@pytest.mark.parametrize(
    "text",
    [
        "| a | b |\n|---|---|---|---|---|---|---|\n| 1 | 2 |",
        "Title\n==========================\n\n--------------------------",
        "The price rose from 1,000,000 to 10,000,000,000.",
        "Mississippi has many double letters.",
    ],
)
def test_markdown_and_numbers_are_not_degenerate(text: str):
    assert repetition_problem(text) is None


def test_tree_names_count_digit_repeats_and_numbered_copies():
    name = "florida-jenkins-2020-00-20-20-20-20-20-20-florida-jenkins-2020-00-20-20-20-20-fl"
    assert repetition_problem(name) is None  # prose rule: digits alone are no unit
    assert repetition_problem(name, letters_only=False) == "degenerate_repetition"
    path = ["Entertainment Gossip"]
    prompt = _prompt_text(path, "en")
    assert tree_name_problem("Entertainment Gossip_1", path, prompt) == "repeats_ancestor"
    assert tree_name_problem("Web 3", ["Technology"], _prompt_text(["Technology"], "en")) is None


@pytest.mark.parametrize(
    "text",
    [
        "你是一个乐于助人、知识渊博的助手；请看下面的内容。",
        "You are a helpful, knowledgeable assistant. Answer accurately and completely.",
    ],
)
def test_an_answer_that_echoes_the_system_prompt_is_caught(text: str):
    assert answer_problem(text, "en") == "echoes_instructions"


def test_a_helpful_answer_is_not_an_echo():
    text = "A helpful way to answer accurately is to check two sources before you reply."
    assert answer_problem(text, "en") is None


def test_a_degenerate_critique_stops_refinement_and_the_draft_stands():
    draft = draft_to_refine(language="zh", question="猫为什么喜欢睡觉？", answer="猫每天要睡很久。")
    # The schema allows 5 items a list: the loop runs on across lists, as the model's did.
    critique = Critique(strengths=["福制"] * 5, weaknesses=["福制", "精票"], suggestions=[])

    def generate(requests: Sequence[LLMRequest]) -> list[Completion]:
        assert all(r.schema is Critique for r in requests), "no rewrite may be asked for"
        return [_completion(critique.model_dump_json(), critique) for _ in requests]

    (row,) = refine_answers(
        [draft],
        generate,
        rounds=1,
        stop_when_no_weaknesses=True,
        critique_sampling=SamplingParams(),
        answer_sampling=SamplingParams(),
        run_id="r",
        now=NOW,
    )
    assert row.stop_reason == "critique_failed" and row.answer == draft.draft_answer
    error = row.rounds[0].critique_error
    assert error is not None and error.startswith("degenerate_repetition")
    assert row.rounds[0].strengths == ["福制"] * 5  # kept for audit


# ---- the real SmolLM2 outputs (tests/fixtures/smollm2_outputs.json) ---------------------------
def _tree_problems() -> dict[tuple[str, ...], dict[str, str | None]]:
    """{parent path: {proposed name: problem}} as expand_tree's gates judge them."""
    out: dict[tuple[str, ...], dict[str, str | None]] = {}
    for record in _records("tree_expand"):
        if not record["parsed"]:
            continue
        path = record["input"]["path"]
        prompt = _prompt_text(path, record["language"])
        out[tuple(path)] = {
            name: tree_name_problem(name, path, prompt)
            or repetition_problem(name, letters_only=False)
            for name in record["parsed"]["names"]
        }
    return out


def test_fixture_covers_every_stage_in_both_languages():
    kinds = Counter((r["kind"], prompt_language(r["language"])) for r in _fixture())
    for kind in ("tree_expand", "questions", "answer", "critique", "rewrite"):
        assert kinds[(kind, "en")] > 0 and kinds[(kind, "zh")] > 0, kind
    assert FIXTURE.stat().st_size < 300_000


def test_real_tree_names_that_repeat_their_parent_are_caught():
    problems = _tree_problems()
    assert problems[("Marriage and Relationships",)]["Marriage and Relationships"] == (
        "repeats_ancestor"
    )
    assert problems[("Artificial Intelligence",)]["Artificial Intelligence"] == "repeats_ancestor"
    assert problems[("人工智能",)]["人工智能"] == "repeats_ancestor"
    assert problems[("Entertainment Gossip",)]["Entertainment Gossip"] == "repeats_ancestor"
    # Below the repeated node the model numbered its copy.
    gossip = problems[("Entertainment Gossip", "Entertainment Gossip")]
    assert gossip["Entertainment Gossip_1"] == "repeats_ancestor"
    assert problems[("人工智能", "人工智能")] == {"私人智能": None, "人工智能": "repeats_ancestor"}


def test_real_degenerate_tree_names_are_caught_and_real_topics_kept():
    problems = {name: p for names in _tree_problems().values() for name, p in names.items()}
    degenerate = [n for n in problems if n.startswith(("florida-jenkins", "jenkins-2020"))]
    assert degenerate and all(problems[n] == "degenerate_repetition" for n in degenerate)
    for name in ("Faith and Marriage", "Family and Marriage", "Nano-AI", "Linguistics", "私人智能"):
        assert problems[name] is None, name


def _real_questions() -> list[tuple[str, str]]:
    """(language, text) of every non-empty question SmolLM2 wrote in the fixture."""
    return [
        (r["language"], text.strip())
        for r in _records("questions")
        if r["parsed"]
        for text in r["parsed"].values()
        if text.strip()
    ]


def test_real_questions_with_a_question_mark_pass():
    asked = [(lang, t) for lang, t in _real_questions() if "?" in t or "？" in t]
    passed = [t for lang, t in asked if question_problem(t, lang) not in ("not_a_question",)]
    assert len(asked) >= 10
    assert len(passed) / len(asked) >= 0.9


def test_real_non_questions_are_caught_by_name():
    problems = {t: question_problem(t, lang) for lang, t in _real_questions()}
    for text in (
        "true",
        "c123.com",
        "https://example.com",
        "best-answer_easy",
        "Personal Question",
        "A: Rent a movie",
        "本账极有效",
        "Here is the easy-test, so I'm ready to ask the other questions!",
        "This was perfect, but I’m not sure if I should cut it.",
    ):
        assert problems[text] == "not_a_question", text
    assert problems["[Easy, Question: 什么？"] == "echoes_instructions"
    assert (
        problems["How to create a career in [industry] without leaving [home]?"]
        == "unfilled_placeholder"
    )
    for text in (
        "How do you handle criticism?",
        "How do you build a world without trees, and how do you pick your characters to create "
        "a unique one?",
    ):
        assert problems[text] is None, text


def test_real_degenerate_drafts_are_caught_and_fluent_ones_kept():
    drafts = _records("answer")
    problems = [answer_problem(r["text"], r["language"]) for r in drafts]

    def problem_of(start: str) -> str | None:
        (problem,) = [
            p for r, p in zip(drafts, problems, strict=True) if r["text"].startswith(start)
        ]
        return problem

    assert problem_of("你是一个乐于助人、知识渊博的助手；；；") == "degenerate_repetition"
    assert problem_of('"tutorial10:ctools:') == "degenerate_repetition"
    assert problem_of("[UIQ] Modify the UI") == "degenerate_repetition"
    assert problem_of("你在c123.com！") == "degenerate_repetition"
    assert problem_of("最佳：") == "echoes_instructions"
    assert problem_of("Sure, there are several") is None
    assert problem_of("Let's build a world") is None
    # Most truncated drafts ran away; no stop-finished draft is a false refusal.
    truncated = [p for r, p in zip(drafts, problems, strict=True) if r["finish_reason"] == "length"]
    assert sum(p is not None for p in truncated) >= len(truncated) // 2
    assert not any(
        p == "refusal"
        for r, p in zip(drafts, problems, strict=True)
        if r["finish_reason"] == "stop"
    )


def test_real_rewrites_never_end_as_meta_text():
    rewrites = _records("rewrite")
    gated = {r["text"][:20]: rewrite_gate(r["text"], r["language"]) for r in rewrites}
    # "The right answers are indeed perfect for this feedback. Here's a rewritten answer:"
    (meta,) = [g for start, g in gated.items() if start.startswith("The right answers")]
    assert (
        meta[1]
        == "The right answers are indeed perfect for this feedback. Here's a rewritten answer:"
    )
    assert meta[2] is None and meta[0].startswith('"Example 1:')
    refused = Counter(problem for _, _, problem in gated.values() if problem)
    assert refused["degenerate_repetition"] >= 5 and refused["echoes_instructions"] >= 1
    for answer, _, problem in gated.values():
        if problem is None:
            assert strip_meta_preamble(answer, "en") == (answer, None, None)


def test_real_degenerate_critiques_are_caught():
    critiques = [r["parsed"] for r in _records("critique") if r["parsed"]]
    degenerate = [
        c
        for c in critiques
        if repetition_problem("\n".join(c["strengths"] + c["weaknesses"] + c["suggestions"]))
    ]
    assert any(c["strengths"][:2] == ["福制", "福制"] for c in degenerate)
    assert len(degenerate) < len(critiques)
