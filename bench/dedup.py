"""dedup_100k_seconds (exact search), dedup_1m_seconds and dedup_1m_recall (approximate index),
and this machine's float32 matrix-multiply speed, which bounds the exact search from below.

An exact search over n rows of d dims scores every pair once: n^2 / 2 dot products of d
multiply-adds, n^2 * d floating-point operations. No implementation on this machine beats
n^2 * d / (its float32 GEMM speed).
"""

from __future__ import annotations

import time

import numpy as np

from bench.core import Context, Result, timed
from bench.data import DIM, synthetic_embeddings, synthetic_questions
from condor_dagster.core.dedup import deduplicate

THRESHOLD = 0.9  # the pipeline's default similarity_threshold


def sgemm_gflops(seconds: float = 2.0) -> float:
    """float32 GEMM speed on tiles shaped like the exact search's (2048 x 384 x 4096)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, DIM), dtype=np.float32)
    b = rng.standard_normal((4096, DIM), dtype=np.float32)
    out = np.empty((2048, 4096), dtype=np.float32)
    np.matmul(a, b.T, out=out)
    flops = 2.0 * a.shape[0] * b.shape[0] * DIM
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        best = min(best, timed(lambda: np.matmul(a, b.T, out=out)))
    return flops / best / 1e9


def floor_seconds(n: int, gflops: float) -> float:
    """The exact search's arithmetic (n(n-1)/2 pairs x 2d flops) at the measured speed."""
    return n * (n - 1) * DIM / (gflops * 1e9)


def run_exact(ctx: Context) -> dict[str, Result]:
    n = ctx.sizes.dedup_exact_rows
    data = synthetic_embeddings(n, seed=1)
    ids, vectors = data.ids, data.vectors
    texts = synthetic_questions(n)
    gflops: list[float] = []
    seconds: list[float] = []
    dropped = 0
    ctx.log(f"dedup exact: {ctx.reps} x (sgemm probe, deduplicate {n} x {DIM})")
    for _ in range(ctx.reps):
        gflops.append(sgemm_gflops())
        began = time.perf_counter()
        decided = deduplicate(ids, texts, vectors, THRESHOLD, index_kind="flat")
        seconds.append(time.perf_counter() - began)
        dropped = sum(not d.kept for d in decided)
    floors = [floor_seconds(n, g) for g in gflops]
    return {
        "dedup_100k_seconds": Result(
            seconds,
            note=f"{n} rows, {dropped} dropped; sgemm floor {_m(floors):.1f} s",
            detail={"rows": n, "dropped": dropped, "floor_seconds": floors},
        ),
        "sgemm_gflops": Result(gflops, note="float32 GEMM, all cores (numpy BLAS)"),
        "dedup_100k_floor_seconds": Result(
            floors, note=f"{n}^2 x {DIM} flops at the measured sgemm speed"
        ),
    }


def run_approx(ctx: Context) -> dict[str, Result]:
    n = ctx.sizes.dedup_approx_rows
    data = synthetic_embeddings(n, seed=2)
    ids, vectors = data.ids, data.vectors
    texts = synthetic_questions(n)
    seconds = []
    decisions = None
    ctx.log(f"dedup approximate: {ctx.reps} x deduplicate {n} x {DIM} (IVF)")
    for _ in range(ctx.reps):
        began = time.perf_counter()
        decisions = deduplicate(ids, texts, vectors, THRESHOLD, index_kind="ivf")
        seconds.append(time.perf_counter() - began)
    assert decisions is not None
    planted = np.unique(np.concatenate([data.copies, data.sources]))
    recall, sampled, detail = decision_recall(
        ids, vectors, decisions, planted, ctx.sizes.recall_sample
    )
    return {
        "dedup_1m_seconds": Result(
            seconds,
            note=f"{n} rows, {sum(not d.kept for d in decisions)} dropped",
            detail={"rows": n},
        ),
        "dedup_1m_recall": Result(
            [recall] * len(seconds),
            note=f"{sampled} sampled rows that have an earlier near-duplicate",
            detail=detail,
        ),
    }


def decision_recall(
    ids: list[str], vectors: np.ndarray, decisions: list, planted: np.ndarray, sample: int
) -> tuple[float, int, dict[str, int]]:
    """Share of sampled rows whose approximate decision equals the exact-search decision.

    Sampled among rows with at least one earlier row (id order) at or above the threshold:
    rows without one are kept by both searches (an index never invents a pair), so including
    them would only pad the score. Such rows are found among the planted paraphrases and their
    sources (unrelated synthetic rows sit near cosine 0.25). For each, the exact decision is
    recomputed by brute force from the same earlier decisions: the most similar earlier kept
    row (ties: smaller id), or kept."""
    order = np.argsort(np.array(ids, dtype=object))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids))
    kept = np.array([d.kept for d in decisions])
    rng = np.random.default_rng(3)
    agree = checked = 0
    dropped_exact = dropped_both = 0
    candidates = rng.permutation(planted)
    for start in range(0, len(candidates), 128):
        if checked >= sample:
            break
        block = candidates[start : start + 128]
        sims = vectors[block] @ vectors.T
        for row, row_sims in zip(block.tolist(), sims, strict=True):
            earlier = np.flatnonzero((row_sims >= np.float32(THRESHOLD)) & (rank < rank[row]))
            if not len(earlier) or checked >= sample:
                continue
            checked += 1
            live = earlier[kept[earlier]]
            if len(live):
                best = max(live.tolist(), key=lambda j: (row_sims[j], -rank[j]))
                exact = (False, ids[best])
                dropped_exact += 1
            else:
                exact = (True, None)
            got = (decisions[row].kept, decisions[row].duplicate_of)
            agree += got == exact
            dropped_both += (not exact[0]) and not got[0]
    detail = {
        "sampled": checked,
        "same_decision": agree,
        "exact_drops": dropped_exact,
        "drops_found": dropped_both,
    }
    return (agree / checked if checked else 1.0), checked, detail


def _m(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
