"""The quota and surplus arithmetic, and greedy ROUGE-L filtering in both languages."""

import pytest

from condor_dagster.methods.augcon.query_filter import filter_queries, generation_target, quota


def test_quota_is_one_question_per_35_characters() -> None:
    assert quota(500) == 14
    assert quota(35) == 1
    assert quota(10) == 1  # every kept chunk asks at least one question
    assert generation_target(14) == 17  # 14 * 1.15 = 16.1, rounded up
    assert generation_target(20) == 23
    assert generation_target(1) == 2
    with pytest.raises(ValueError, match="chars_per_question"):
        quota(100, chars_per_question=0)


@pytest.mark.parametrize(
    ("queries", "duplicate"),
    [
        (
            [
                "What does APT do before it installs a package?",
                "What does APT do before it installs a package file?",
                "Which file lists the package sources?",
            ],
            1,
        ),
        (
            [
                "APT 在安装软件包之前做什么？",
                "APT 在安装软件包之前会做什么？",
                "哪个文件列出软件源？",
            ],
            1,
        ),
    ],
)
def test_greedy_filter_drops_the_lower_scored_duplicate(queries: list[str], duplicate: int) -> None:
    decisions = filter_queries(queries, [0.9, 0.5, 0.7], chunk_quota=5)
    assert [d.kept for d in decisions] == [True, False, True]
    dropped = decisions[duplicate]
    assert dropped.drop_reason == "rouge_duplicate"
    assert dropped.collided_with == 0
    assert dropped.rouge_l is not None and dropped.rouge_l > 0.7


def test_filter_stops_at_the_quota_in_score_order() -> None:
    queries = ["Who wrote it?", "Where is the mirror list?", "When was Debian founded?"]
    decisions = filter_queries(queries, [0.1, 0.9, 0.5], chunk_quota=2)
    assert [d.kept for d in decisions] == [False, True, True]
    assert decisions[0].drop_reason == "over_quota"
    with pytest.raises(ValueError, match="scores"):
        filter_queries(queries, [0.1], chunk_quota=2)
