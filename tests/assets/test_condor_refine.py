"""refined_answers: Self-Reflection Refinement rounds, early stop, lineage (scripted LLM)."""

from __future__ import annotations

import polars as pl

from condor_dagster.core.llm import SamplingParams
from condor_dagster.core.refine import Critique, DraftToRefine, _State, refine_request
from condor_dagster.resources.scripted_llm import ScriptRule

from .conftest import ONE_TAG, REWRITE, SCRIPTED_RULES, CondorWorld, make_world, scripted_llm


def _one_tag_run(world: CondorWorld, **refine_config: object) -> str:
    assert world.materialize_tree(**ONE_TAG).success
    world.sync_tags()
    (key,) = world.tags()
    # Again, as a second `condor demo` on the same home does: nothing new, no error.
    again = world.sync_tags()
    assert again.skip_reason is not None and not again.dynamic_partitions_requests
    assert world.tags() == [key]
    config = (
        {"ops": {"condor__refined_answers": {"config": refine_config}}} if refine_config else None
    )
    assert world.materialize_tags([key], run_config=config).success
    return key


def test_one_round_critiques_then_rewrites_every_draft(scripted_world: CondorWorld):
    key = _one_tag_run(scripted_world)
    drafts = scripted_world.read("draft_answers", key)
    refined = scripted_world.read("refined_answers", key)
    assert refined.height == drafts.height > 0
    assert sorted(refined["parent_id"]) == sorted(drafts["id"])
    assert (refined["rounds_run"] == 1).all() and (refined["stop_reason"] == "max_rounds").all()
    row = refined.row(0, named=True)
    (round_one,) = row["rounds"]
    assert round_one["weaknesses"] == ["no example"]
    assert round_one["suggestions"] == ["add an example"]
    assert round_one["critique_lineage"]["prompt_name"] == "shared/critique/en"
    assert round_one["answer_lineage"]["prompt_name"] == "shared/refine/en"
    assert row["answer"] == round_one["answer"] and row["answer"].startswith("Improved")
    draft = drafts.filter(pl.col("id") == row["parent_id"]).row(0, named=True)
    assert row["draft_answer"] == draft["answer"] and row["question"] == draft["question"]


def test_no_weakness_stops_early_and_keeps_the_draft(tmp_path, monkeypatch):
    praise = ScriptRule(
        pattern="Critique the answer",
        response='{"strengths": ["complete"], "weaknesses": [], "suggestions": []}',
    )
    llm = scripted_llm(tmp_path / "c.sqlite3", rules=[praise, *SCRIPTED_RULES[1:]])
    world = make_world(tmp_path, monkeypatch, llm)
    key = _one_tag_run(world, refine_rounds=3)
    refined = world.read("refined_answers", key)
    assert (refined["stop_reason"] == "no_weaknesses").all()
    assert (refined["rounds_run"] == 1).all()
    assert refined["answer"].to_list() == refined["draft_answer"].to_list()
    assert (
        refined["rounds"].list.eval(pl.element().struct.field("answer")).explode().is_null().all()
    )


def test_multi_round_refinement_keeps_every_round(tmp_path, monkeypatch):
    world = make_world(tmp_path, monkeypatch, scripted_llm(tmp_path / "c.sqlite3"))
    key = _one_tag_run(world, refine_rounds=3, stop_when_no_weaknesses=False)
    refined = world.read("refined_answers", key)
    assert (refined["rounds_run"] == 3).all()
    row = refined.row(0, named=True)
    answers = [r["answer"] for r in row["rounds"]]
    assert [r["round"] for r in row["rounds"]] == [1, 2, 3]
    assert len(set(answers)) == 3  # each round rewrote the previous round's answer
    assert row["answer"] == answers[-1]


def test_unusable_critique_stops_the_row_with_a_reason(tmp_path, monkeypatch):
    broken = ScriptRule(pattern="Critique the answer", response="Looks fine to me.")
    llm = scripted_llm(tmp_path / "c.sqlite3", rules=[broken, REWRITE, *SCRIPTED_RULES[2:]])
    world = make_world(tmp_path, monkeypatch, llm)
    key = _one_tag_run(world)
    refined = world.read("refined_answers", key)
    assert (refined["stop_reason"] == "critique_failed").all()
    assert refined["answer"].to_list() == refined["draft_answer"].to_list()
    error = refined.row(0, named=True)["rounds"][0]["critique_error"]
    assert error.startswith("invalid_json")


def test_refine_request_presents_the_critique_as_user_feedback():
    draft = DraftToRefine(
        {
            "id": "a-1",
            "parent_id": "q-1",
            "method": "condor",
            "partition_key": "t",
            "language": "en",
            "origin": {"tag_path": "Pets > Dogs", "task": "view", "difficulty": "easy"},
            "question": "Why?",
            "answer": "Because.",
            "truncated": False,
        }
    )
    critique = Critique(strengths=["short"], weaknesses=["no reason"], suggestions=["explain"])
    request = refine_request(_State(draft, draft.draft_answer), critique, SamplingParams())
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert request.messages[1].content == "Why?" and request.messages[2].content == "Because."
    assert "- no reason" in request.messages[3].content
    assert "- explain" in request.messages[3].content
