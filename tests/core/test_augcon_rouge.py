"""ROUGE-L in both languages: Chinese segmented into words, not dropped as rouge-score would."""

import pytest

from condor_dagster.methods.augcon.rouge import rouge_l, tokenize


def test_chinese_is_segmented_into_words() -> None:
    tokens = tokenize("软件包管理系统会检查依赖关系")
    assert len(tokens) >= 4
    assert "".join(tokens) == "软件包管理系统会检查依赖关系"


def test_mixed_text_keeps_both_scripts() -> None:
    assert tokenize("APT 是一个软件包工具, Debian!")[:1] == ["apt"]
    assert "debian" in tokenize("APT 是一个软件包工具, Debian!")


@pytest.mark.parametrize(
    ("part", "parent", "low", "high"),
    [
        # A part copied from its parent is fully supported.
        ("APT installs packages.", "Debian uses APT. APT installs packages.", 1.0, 1.0),
        ("APT 负责安装软件包。", "Debian 使用 APT。APT 负责安装软件包。", 1.0, 1.0),
        # A hallucinated part is not.
        ("Bananas grow on tall trees in Brazil.", "Debian uses APT to install packages.", 0, 0.2),
        ("香蕉生长在巴西的高大树木上。", "Debian 使用 APT 安装软件包。", 0, 0.2),
    ],
)
def test_precision_of_a_part_against_its_parent(
    part: str, parent: str, low: float, high: float
) -> None:
    assert low <= rouge_l(part, parent).precision <= high


def test_empty_side_scores_zero() -> None:
    assert rouge_l("", "text").fmeasure == 0.0
    assert rouge_l("text", "").precision == 0.0
