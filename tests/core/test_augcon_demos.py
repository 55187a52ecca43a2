"""AugCon's answer demonstrations chosen by self-check, pure: the requests, the verdicts and
which examples become demos. No engine."""

from __future__ import annotations

import pytest

from condor_dagster.core.llm import Completion, SamplingParams
from condor_dagster.methods.augcon.demos import (
    Verdict,
    answer_request,
    demo_answer_requests,
    format_demos,
    judge_requests,
    parse_verdict,
    select_demos,
)
from condor_dagster.methods.augcon.examples import QAExample, load_examples, shipped_examples_path

SAMPLING = SamplingParams(temperature=0.2, max_tokens=64)
EXAMPLES = [
    QAExample(
        context=f"Passage {n}: the port is {8000 + n}.",
        question=f"Which port does service {n} use?",
        answer=f"Service {n} uses port {8000 + n}.",
    )
    for n in range(6)
]


def completion(text: str, *, parsed: Verdict | None = None, finish: str = "stop") -> Completion:
    return Completion(
        text=text,
        finish_reason=finish,
        prompt_tokens=50,
        completion_tokens=10,
        latency_s=0.1,
        model="m",
        engine="scripted",
        engine_version="0",
        seed=1,
        key="k",
        cached=False,
        parsed=parsed,
    )


def verdict(value: str) -> Completion:
    return completion(
        f'{{"verdict": "{value}"}}', parsed=Verdict.model_validate({"verdict": value})
    )


def test_answer_prompt_holds_demos_context_and_question_in_both_languages() -> None:
    for language, label in (("en-us", "Answer: Service 1 uses port 8001."), ("zh-cn", "答案：")):
        request = answer_request(
            context="Ports 中文 <b>&amp;</b>, a/b 😀",
            question="Q?",
            demos=EXAMPLES[1:2],
            language=language,
            sampling=SAMPLING,
        )
        user = request.messages[-1].content
        assert label in user and "Ports 中文 <b>&amp;</b>, a/b 😀" in user and "Q?" in user
        assert request.schema is None and request.sampling == SAMPLING
    assert "No examples" in format_demos([], language="en")
    assert "暂无示例" in format_demos([], language="zh-cn")


def test_demo_answers_have_no_demos_and_judges_are_constrained() -> None:
    answers = demo_answer_requests(EXAMPLES[:2], language="en", sampling=SAMPLING)
    assert len(answers) == 2
    assert "No examples" in answers[0].messages[-1].content
    assert "Which port does service 0 use?" in answers[0].messages[-1].content
    judges = judge_requests(
        EXAMPLES[:2],
        [completion("port 8000"), completion("no idea")],
        language="zh",
        sampling=SAMPLING,
    )
    assert [j.schema for j in judges] == [Verdict, Verdict]
    assert "Service 0 uses port 8000." in judges[0].messages[-1].content
    assert "no idea" in judges[1].messages[-1].content
    with pytest.raises(ValueError):
        judge_requests(EXAMPLES[:2], [completion("x")], language="en", sampling=SAMPLING)


def test_select_keeps_the_first_passing_up_to_keep_with_a_reason_for_each_other() -> None:
    answers = [
        completion("Service 0 uses port 8000."),
        completion("Service 1 uses port", finish="length"),
        completion("Port 9999."),
        completion("8003"),
        completion("8004"),
        completion("8005"),
    ]
    judged = [
        verdict("yes"),
        verdict("yes"),
        verdict("no"),
        completion("yes!"),
        verdict("yes"),
        verdict("yes"),
    ]
    decisions = select_demos(EXAMPLES, answers, judged, keep=2)
    assert [d.reason for d in decisions] == [
        None,
        "truncated",
        "failed_self_check",
        "parse_failed",
        None,
        "over_quota",
    ]
    assert [d.example for d in decisions if d.kept] == [EXAMPLES[0], EXAMPLES[4]]
    assert parse_verdict(judged[3]) is None and parse_verdict(judged[2]) == "no"
    assert all(not d.kept for d in select_demos(EXAMPLES[:1], answers[:1], judged[:1], keep=0))


def test_shipped_examples_make_valid_prompts() -> None:
    for language in ("en", "zh"):
        examples = load_examples(shipped_examples_path(language))
        assert len(examples) == 10
        requests = demo_answer_requests(examples, language=language, sampling=SAMPLING)
        assert all(
            e.question in r.messages[-1].content for e, r in zip(examples, requests, strict=True)
        )
