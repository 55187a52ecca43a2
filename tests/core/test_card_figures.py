"""The dataset card's pictures: valid PNGs, deterministic names, empty variants, CJK text."""

from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl
import pytest

from condor_dagster.methods.condor.card_figures import (
    FIGURE_FILES,
    figure_card_lines,
    write_card_figures,
)
from condor_dagster.methods.condor.records import DIFFICULTIES, TASK_TYPES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def samples(n: int = 42, *, kept_void: bool = True) -> pl.DataFrame:
    """Condor's decided candidates, origin flattened: a refine and a void row per question."""
    rows = []
    for i in range(n):
        common = {
            # Chinese questions and answers: their text is measured, never drawn.
            "question": "如何训练小狗坐下？" * (1 + i % 5),
            "task": TASK_TYPES[i % len(TASK_TYPES)],
            "difficulty": DIFFICULTIES[i % len(DIFFICULTIES)],
        }
        rows.append(
            {
                **common,
                "variant": "refine",
                "answer": "首先准备零食。" * (3 + i % 7),
                "kept": i % 6 != 0,
            }
        )
        rows.append(
            {**common, "variant": "void", "answer": "准备零食。" * (1 + i % 4), "kept": kept_void}
        )
    return pl.DataFrame(rows)


def read_png(path: Path):
    from matplotlib import image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000, path
    return image.imread(path)


def test_figures_are_readable_pngs_with_fixed_names(tmp_path: Path):
    with warnings.catch_warnings():
        # No glyph, backend or font warnings, with CJK text in every sample.
        warnings.simplefilter("error")
        paths = write_card_figures(samples(), tmp_path)
    assert {name: p.name for name, p in paths.items()} == FIGURE_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FIGURE_FILES.values())
    for path in paths.values():
        pixels = read_png(path)
        height, width, channels = pixels.shape
        assert 300 <= height <= 800 and 600 <= width <= 1400 and channels in (3, 4)
        # Something is drawn: not one flat colour.
        assert pixels[..., :3].std() > 0.05
    # The heatmap is wider than the histograms (two panels with task names).
    assert read_png(paths["task_difficulty"]).shape[1] > read_png(paths["answer_lengths"]).shape[1]


def test_same_samples_give_the_same_bytes(tmp_path: Path):
    first = write_card_figures(samples(), tmp_path / "a")
    second = write_card_figures(samples(), tmp_path / "b")
    for name in FIGURE_FILES:
        assert first[name].read_bytes() == second[name].read_bytes()
    other = write_card_figures(samples(30), tmp_path / "c")
    assert other["task_difficulty"].read_bytes() != first["task_difficulty"].read_bytes()


@pytest.mark.parametrize("case", ["void_empty", "no_samples"])
def test_empty_variants_still_get_pictures(tmp_path: Path, case: str):
    frame = samples(kept_void=False) if case == "void_empty" else samples().head(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = write_card_figures(frame, tmp_path)
    for path in paths.values():
        assert read_png(path).ndim == 3
    # Only the temporary files' owner may leave them: none remain.
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_card_lines_link_the_pictures_relatively(tmp_path: Path):
    paths = write_card_figures(samples(), tmp_path)
    lines = figure_card_lines(paths, card_dir=tmp_path)
    assert lines[0] == "## Figures"
    links = [line for line in lines if line.startswith("![")]
    assert links == [
        "![Question length per variant](card_question_lengths.png)",
        "![Answer length per variant](card_answer_lengths.png)",
        "![Kept samples by task and difficulty](card_task_difficulty.png)",
    ]
