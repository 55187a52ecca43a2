"""Scripted splits through the Context-Split-Tree's stop rules."""

from condor_dagster.methods.augcon.split_rules import (
    SplitRules,
    is_leaf_context,
    parse_marked_up,
    split_outcome,
)

PARENT = (
    "APT reads the list of package sources from /etc/apt/sources.list. "
    "It then downloads the index of every source and resolves dependencies."
)
HALVES = (
    "APT reads the list of package sources from /etc/apt/sources.list.",
    "It then downloads the index of every source and resolves dependencies.",
)
RULES = SplitRules()


def test_a_faithful_split_recurses() -> None:
    outcome = split_outcome(
        PARENT, "Where does APT read its sources from?", HALVES, depth=0, rules=RULES
    )
    assert outcome.stop_reason == "split"
    assert outcome.children == HALVES
    assert min(outcome.support) >= 0.99


def test_a_hallucinated_split_is_dropped_by_rouge_precision() -> None:
    made_up = (HALVES[0], "Bananas are rich in potassium and grow in warm climates.")
    outcome = split_outcome(
        PARENT, "Where does APT read its sources from?", made_up, depth=0, rules=RULES
    )
    assert outcome.stop_reason == "unsupported_split"
    assert outcome.children == ()
    assert outcome.support[1] < 0.7 <= outcome.support[0]


def test_chinese_split_support() -> None:
    parent = "APT 从 sources.list 读取软件源列表。然后它下载每个软件源的索引并解析依赖关系。"
    halves = ("APT 从 sources.list 读取软件源列表。", "然后它下载每个软件源的索引并解析依赖关系。")
    assert (
        split_outcome(parent, "APT 从哪里读取软件源？", halves, depth=0, rules=RULES).stop_reason
        == "split"
    )
    made_up = (halves[0], "香蕉富含钾元素，生长在温暖的气候中。")
    assert (
        split_outcome(parent, "APT 从哪里读取软件源？", made_up, depth=0, rules=RULES).stop_reason
        == "unsupported_split"
    )


def test_a_part_as_long_as_its_parent_stops_recursion() -> None:
    outcome = split_outcome(PARENT, "What does APT do?", (PARENT, HALVES[1]), depth=0, rules=RULES)
    assert outcome.stop_reason == "part_not_shorter"
    assert outcome.children == ()


def test_short_question_short_context_and_depth_bound() -> None:
    assert (
        split_outcome(PARENT, "Why", HALVES, depth=0, rules=RULES).stop_reason == "short_question"
    )
    assert is_leaf_context("Too short a context.", RULES)  # 20 characters
    assert not is_leaf_context("A context of more than twenty characters.", RULES)
    bounded = split_outcome(
        PARENT, "Where are sources listed?", HALVES, depth=1, rules=SplitRules(max_depth=1)
    )
    assert bounded.stop_reason == "max_depth"


def test_marked_up_fallback_in_both_languages() -> None:
    text = f"Question: Where are the sources listed?\nPart 1: {HALVES[0]}\nPart 2: {HALVES[1]}"
    assert parse_marked_up(text) == ("Where are the sources listed?", HALVES)
    zh = "问题：软件源在哪里？\n部分1：第一部分。\n部分2：第二部分。"
    assert parse_marked_up(zh) == ("软件源在哪里？", ("第一部分。", "第二部分。"))
    assert parse_marked_up("no structure here") is None
