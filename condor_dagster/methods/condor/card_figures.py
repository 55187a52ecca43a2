"""The dataset card's pictures: length histograms per variant and the task x difficulty map of
kept samples, written as PNG files beside the card and linked from it.

matplotlib is imported inside the functions (loading the Dagster definitions must stay fast)
and driven through its object API with an Agg canvas: no pyplot, so no global backend switch,
no GUI, and nothing left open between calls. Labels are task names and English words only, so
CJK text in the samples never reaches a font (no missing-glyph warnings).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from condor_dagster.core.export import _atomic_write
from condor_dagster.methods.condor.candidates import VARIANTS
from condor_dagster.methods.condor.records import DIFFICULTIES, TASK_TYPES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Deterministic names, one per picture, beside README.md.
FIGURE_FILES: dict[str, str] = {
    "question_lengths": "card_question_lengths.png",
    "answer_lengths": "card_answer_lengths.png",
    "task_difficulty": "card_task_difficulty.png",
}
FIGURE_TITLES: dict[str, str] = {
    "question_lengths": "Question length per variant",
    "answer_lengths": "Answer length per variant",
    "task_difficulty": "Kept samples by task and difficulty",
}
_COLORS = {"refine": "#1f77b4", "void": "#ff7f0e"}
_DPI = 110
_BINS = 30


def _lengths(samples: pl.DataFrame, variant: str, column: str) -> np.ndarray:
    """Character lengths of `column` over the variant's kept samples (no copy of the texts)."""
    return (
        samples.lazy()
        .filter(pl.col("kept") & (pl.col("variant") == variant))
        .select(pl.col(column).str.len_chars().cast(pl.Int64))
        .collect()
        .to_series()
        .to_numpy()
    )


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> None:
    # format= because the temporary name ends in .tmp; no Software tag, so the bytes depend
    # only on the data and the matplotlib version.
    _atomic_write(
        path, lambda tmp: figure.savefig(tmp, format="png", dpi=_DPI, metadata={"Software": None})
    )


def _histogram(samples: pl.DataFrame, what: str, path: Path) -> None:
    """Overlaid step histograms of refine vs void on shared bins, with their medians."""
    from matplotlib.ticker import MaxNLocator

    data = {v: _lengths(samples, v, what) for v in VARIANTS}
    figure = _new_figure(7.0, 4.0)
    ax = figure.add_subplot()
    everything = np.concatenate([d for d in data.values() if len(d)] or [np.zeros(0, np.int64)])
    if not len(everything):
        ax.text(
            0.5, 0.5, "no kept samples in either variant", ha="center", va="center", fontsize=13
        )
        ax.set_axis_off()
    else:
        edges = np.histogram_bin_edges(everything, bins=min(_BINS, max(1, len(everything))))
        for variant, lengths in data.items():
            if not len(lengths):
                # An empty variant still gets its legend entry, saying why nothing is drawn.
                ax.plot([], [], color=_COLORS[variant], label=f"{variant}: 0 kept samples")
                continue
            median = float(np.median(lengths))
            ax.hist(
                lengths,
                bins=edges.tolist(),
                histtype="step",
                linewidth=2,
                color=_COLORS[variant],
                label=f"{variant}: {len(lengths)} samples, median {median:.0f}",
            )
            ax.axvline(median, color=_COLORS[variant], linestyle="--", linewidth=1)
        ax.set_xlabel(f"{what} length (characters)")
        ax.set_ylabel("samples")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        # Headroom above the tallest bar, so the legend never hides data.
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    ax.set_title(FIGURE_TITLES[f"{what}_lengths"])
    _save(figure, path)


def _task_difficulty_counts(samples: pl.DataFrame, variant: str) -> tuple[list[str], np.ndarray]:
    """(task names, counts[task, difficulty]) of the variant's kept samples; the 7 Condor tasks
    always, plus any other task found."""
    kept = (
        samples.lazy()
        .filter(pl.col("kept") & (pl.col("variant") == variant))
        .select("task", "difficulty")
        .collect()
    )
    found = set(kept["task"].to_list())
    tasks = [*TASK_TYPES, *sorted(found - set(TASK_TYPES))]
    levels = list(DIFFICULTIES)
    counts = np.zeros((len(tasks), len(levels)), np.int64)
    for task, level, n in (
        kept.group_by("task", "difficulty").len().select("task", "difficulty", "len").rows()
    ):
        if level in levels:
            counts[tasks.index(task), levels.index(level)] = n
    return tasks, counts


def _heatmap(samples: pl.DataFrame, path: Path) -> None:
    """Task x difficulty counts of kept samples, refine and void side by side, same scale."""
    from matplotlib.ticker import MaxNLocator

    panels = {v: _task_difficulty_counts(samples, v) for v in VARIANTS}
    vmax = max(1, *(int(c.max(initial=0)) for _, c in panels.values()))
    figure = _new_figure(10.0, 4.6)
    axes = figure.subplots(1, len(VARIANTS), sharey=True)
    image: Any = None
    for ax, (variant, (tasks, counts)) in zip(axes, panels.items(), strict=True):
        image = ax.imshow(counts, cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
        for (i, j), n in np.ndenumerate(counts):
            # Dark cells get white digits, light ones black, so every count stays legible.
            ax.text(
                j, i, str(n), ha="center", va="center", color="white" if n > vmax / 2 else "black"
            )
        ax.set_xticks(range(len(DIFFICULTIES)), list(DIFFICULTIES))
        ax.set_yticks(range(len(tasks)), tasks)
        total = int(counts.sum())
        ax.set_title(f"{variant}: {total} kept samples" if total else f"{variant}: 0 kept samples")
        ax.set_xlabel("difficulty")
    axes[0].set_ylabel("task")
    figure.colorbar(
        image, ax=list(axes), label="kept samples", shrink=0.9, ticks=MaxNLocator(integer=True)
    )
    figure.suptitle(FIGURE_TITLES["task_difficulty"])
    _save(figure, path)


def write_card_figures(samples: pl.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Write every card picture of `samples` (Condor's decided candidates with the origin
    flattened: variant, kept, question, answer, task, difficulty) into `out_dir`; {name: path}.
    Empty variants still get their pictures, which say so."""
    paths = {name: out_dir / file for name, file in FIGURE_FILES.items()}
    _histogram(samples, "question", paths["question_lengths"])
    _histogram(samples, "answer", paths["answer_lengths"])
    _heatmap(samples, paths["task_difficulty"])
    return paths


def figure_card_lines(paths: Mapping[str, Path], *, card_dir: Path) -> list[str]:
    """The card's "Figures" section: one relative image link per written picture."""
    lines = ["## Figures", ""]
    for name, path in paths.items():
        link = Path(path).resolve().relative_to(card_dir.resolve()).as_posix()
        lines += [f"![{FIGURE_TITLES.get(name, name)}]({link})", ""]
    return lines
