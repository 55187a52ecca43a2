"""refine_quality's judge on the real SmolLM2 engine: every verdict parses under the schema,
both orders are asked, and the outcome follows from the two verdicts."""

from __future__ import annotations

import datetime as dt

import pytest

from condor_dagster.core.llm import SamplingParams
from condor_dagster.methods.condor.refine_judge import OUTCOMES, PairToJudge, combine, judge_pairs

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PAIRS = [
    (
        "How do I keep a sourdough starter alive?",
        "Feed it.",
        "Feed the starter equal weights of flour and water once a day, keep it at room "
        "temperature, and discard half before each feeding so it stays active.",
    ),
    (
        "Why is the sky blue?",
        "Because of the ocean.",
        "Sunlight scatters off air molecules, and shorter blue wavelengths scatter far more "
        "than red ones (Rayleigh scattering), so blue light reaches us from every direction.",
    ),
    (
        "What is a prime number?",
        "A number with exactly two divisors: 1 and itself, such as 2, 3, 5 and 7.",
        "A whole number greater than 1 whose only divisors are 1 and itself, such as 2, 3, 5, 7.",
    ),
]


@pytest.mark.engine
def test_the_real_judge_answers_within_the_schema_in_both_orders(smollm2_engine) -> None:
    pairs = [
        PairToJudge(
            row={
                "id": f"r-{i}",
                "parent_id": f"a-{i}",
                "question_id": f"q-{i}",
                "method": "condor",
                "partition_key": "food.00000001",
                "language": "en",
                "origin": {
                    "tag_path": "Food > Baking",
                    "task": "domain_knowledge_qa",
                    "difficulty": "easy",
                },
                "question": question,
                "draft_answer": draft,
                "answer": refined,
            },
            rewritten=True,
        )
        for i, (question, draft, refined) in enumerate(PAIRS)
    ]
    requests: list[int] = []

    def generate(batch):
        requests.append(len(batch))
        return smollm2_engine.generate(batch).completions

    rows = judge_pairs(
        pairs,
        generate,
        sampling=SamplingParams(temperature=0.0, max_tokens=128),
        enabled=True,
        run_id="test",
        now=NOW,
    )
    assert requests == [2 * len(PAIRS)]  # one engine call, two orders per pair
    for row in rows:
        assert row.outcome in OUTCOMES
        assert row.draft_first is not None and row.refined_first is not None
        for call in (row.draft_first, row.refined_first):
            assert call.error is None, call.raw_text
            assert call.verdict in ("A", "B", "tie")
            assert call.lineage.model.endswith("smollm2-135m-instruct")
        assert row.outcome == combine(row.draft_first.winner, row.refined_first.winner)
