"""Pure Condor logic: prompts, the markup fallback, tree expansion rules, row schemas."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from condor_dagster.core.dedup_frame import DedupRow
from condor_dagster.core.llm import Completion, LLMRequest, SamplingParams
from condor_dagster.core.prompts import LANGUAGES, load_prompt
from condor_dagster.core.rows import arrow_schema, rows_to_frame
from condor_dagster.methods.condor.questions import TASK_DESCRIPTIONS, parse_question_markup
from condor_dagster.methods.condor.records import TASK_TYPES, CondorOrigin, QuestionRow, TagNames
from condor_dagster.methods.condor.taxonomy import parse_taxonomy, seed_nodes
from condor_dagster.methods.condor.tree import expand_tree

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("name", ["condor/tree_expand", "condor/questions", "shared/answer"])
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_prompt_renders_without_leftover_placeholders(name, language):
    prompt = load_prompt(name, language)
    values = {
        "path": "Pets > Dogs",
        "name": "Dogs",
        "count": 3,
        "tag_path": "Pets > Dogs",
        "task_name": "View",
        "task_description": "ask for an opinion",
        "question": "Why do dogs bark?",
    }
    system, user = prompt.render(**values)
    assert system.role == "system" and user.role == "user"
    assert "$" not in system.content + user.content
    assert len(prompt.sha) == 12 and prompt.language == language


def test_task_descriptions_cover_the_seven_condor_tasks_in_each_language():
    for language in LANGUAGES:
        assert set(TASK_DESCRIPTIONS[language]) == set(TASK_TYPES)
    assert len(TASK_TYPES) == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Easy] A?\n[Medium] B?\n[Hard] C?", {"easy": "A?", "medium": "B?", "hard": "C?"}),
        (
            "[easy]  多少？ [MEDIUM] 为什么？\n[Hard] 如何？",
            {"easy": "多少？", "medium": "为什么？", "hard": "如何？"},
        ),
        ("[Easy] only one", None),
        ("no markup at all", None),
    ],
)
def test_question_markup_fallback(text, expected):
    assert parse_question_markup(text) == expected


def _completion(text: str, parsed=None, finish="stop", error=None) -> Completion:
    return Completion(
        text=text,
        finish_reason=finish,
        prompt_tokens=5,
        completion_tokens=7,
        latency_s=0.0,
        model="m",
        engine="scripted",
        engine_version="0",
        seed=1,
        key="k",
        cached=False,
        parsed=parsed,
        parse_error=error,
    )


def test_expansion_keeps_user_levels_and_records_every_dropped_name():
    roots = parse_taxonomy(
        "roots:\n"
        "  - name: Pets\n"
        "    children: [Dogs]\n"  # the user already has level 1 here
        "  - name: Travel\n"
        "    custom: [Visa rules 2026]\n"  # custom tags do not stop expansion
    )
    calls: list[list[LLMRequest]] = []

    def generate(requests):
        calls.append(list(requests))
        return [
            _completion("x", TagNames(names=["Hiking", "hiking.", "@@@", "Food", "Trains"]))
            for _ in requests
        ]

    result = expand_tree(
        seed_nodes(roots),
        generate,
        depth=2,
        fan_out=[2],
        sampling=SamplingParams(),
        run_id="r",
        now=NOW,
    )
    # Only Travel is expanded: Pets has a user-given child.
    assert [len(c) for c in calls] == [1]
    travel_children = sorted(
        n.name
        for n in result.nodes
        if n.parent_id and n.level == 1 and n.path[0] == "Travel" and n.source == "llm"
    )
    assert travel_children == ["Food", "Hiking"]
    assert sorted((d.raw_name, d.reason) for d in result.drops) == [
        ("@@@", "garbage"),
        ("Trains", "over_fan_out"),
        ("hiking.", "duplicate_sibling"),
    ]
    leaves = {n.name for n in result.nodes if n.is_leaf}
    assert leaves == {"Dogs", "Visa rules 2026", "Hiking", "Food"}
    assert all(
        result.lineage[n.node_id].prompt_name == "condor/tree_expand/en"
        for n in result.nodes
        if n.source == "llm"
    )


def test_expansion_failure_is_a_drop_and_the_node_stays_a_leaf():
    roots = parse_taxonomy("roots: [Pets]\n")

    def generate(requests):
        return [_completion('{"names": ["a', finish="length", error="truncated: x")] * len(requests)

    result = expand_tree(
        seed_nodes(roots),
        generate,
        depth=3,
        fan_out=[2, 2],
        sampling=SamplingParams(),
        run_id="r",
        now=NOW,
    )
    assert [(d.reason, d.level) for d in result.drops] == [("truncated", 1)]
    assert [n.name for n in result.nodes if n.is_leaf] == ["Pets"]


def test_expansion_validates_depth_and_fan_out():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        expand_tree(
            [], lambda r: [], depth=0, fan_out=[], sampling=SamplingParams(), run_id="r", now=NOW
        )
    with pytest.raises(ValueError, match="fan_out needs one count per level"):
        expand_tree(
            [], lambda r: [], depth=3, fan_out=[2], sampling=SamplingParams(), run_id="r", now=NOW
        )


def test_row_models_define_the_parquet_schema():
    schema = arrow_schema(QuestionRow)
    assert schema.field("lineage").type.get_field_index("seed") >= 0
    assert schema.field("drop_reason").nullable and not schema.field("text").nullable
    # The origin struct comes from the method's model; a shared stage's open origin from the
    # type it is given (its input's), and without one the schema refuses to guess.
    assert schema.field("origin").type == pa.struct(list(arrow_schema(CondorOrigin)))
    dedup = arrow_schema(DedupRow, origin=schema.field("origin").type)
    assert dedup.field("embedding").type == pa.list_(pa.float32())
    assert dedup.field("origin").type == schema.field("origin").type
    with pytest.raises(TypeError, match="no Parquet type"):
        arrow_schema(DedupRow)
    empty = rows_to_frame([], QuestionRow)
    assert empty.height == 0 and empty.columns == [f.name for f in schema]
