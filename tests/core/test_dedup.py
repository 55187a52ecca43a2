"""Exact and near-duplicate decisions: planted duplicates, order independence, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from condor_dagster.core.dedup import (
    DedupDecision,
    deduplicate,
    find_exact_duplicates,
    find_near_duplicates,
    normalize_for_exact,
)

DIM = 32
THRESHOLD = 0.9


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def planted(
    n_sources: int, copies_per_source: int, noise: float, seed: int = 0, dim: int = DIM
) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """Random unit vectors plus noisy copies; returns ids, vectors, copy id -> source id.

    Copies get ids that sort after their source ("s0003" < "s0003-c1"), so the source is the
    smallest id of its cluster.
    """
    rng = np.random.default_rng(seed)
    sources = unit(rng.standard_normal((n_sources, dim)))
    ids = [f"s{i:04d}" for i in range(n_sources)]
    rows = [sources]
    source_of: dict[str, str] = {}
    for copy in range(1, copies_per_source + 1):
        rows.append(unit(sources + noise * rng.standard_normal(sources.shape)))
        for i in range(n_sources):
            ids.append(f"s{i:04d}-c{copy}")
            source_of[f"s{i:04d}-c{copy}"] = f"s{i:04d}"
    return ids, np.vstack(rows), source_of


def by_id(decisions: list[DedupDecision]) -> dict[str, DedupDecision]:
    return {d.id: d for d in decisions}


# --- exact ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is AI?", "what is  ai"),
        ("  Hello,\tWorld!! ", "hello, world"),
        ("ＡＢＣ　ｄｅｆ", "abc def"),  # full-width letters and space (NFKC)
        ("Straße?", "STRASSE"),  # casefold
        ("「什么是人工智能？」", "什么是人工智能"),  # CJK punctuation at the ends
    ],
)
def test_normalize_for_exact_matches_case_space_and_end_punctuation(a: str, b: str) -> None:
    assert normalize_for_exact(a) == normalize_for_exact(b)


def test_normalize_for_exact_keeps_inner_punctuation_and_words_apart() -> None:
    assert normalize_for_exact("e.g. 3.14") == "e.g. 3.14"
    assert normalize_for_exact("what is AI") != normalize_for_exact("what is A.I")
    assert normalize_for_exact("?!  ...") == ""


def test_exact_duplicates_keep_smallest_id_and_drop_empty_text() -> None:
    ids = ["q3", "q1", "q2", "q4", "q5", "q6"]
    texts = ["what is  AI", "What is AI?", "Something else", "   ", "?!", None]
    decisions = find_exact_duplicates(ids, texts)

    assert [d.id for d in decisions] == ids  # input order
    got = by_id(decisions)
    assert got["q1"] == DedupDecision("q1", kept=True)
    assert got["q3"] == DedupDecision(
        "q3", kept=False, reason="exact_duplicate", duplicate_of="q1", similarity=1.0
    )
    assert got["q2"].kept
    for empty in ("q4", "q5", "q6"):
        assert got[empty] == DedupDecision(empty, kept=False, reason="empty_text")


# --- near ----------------------------------------------------------------------------------


def test_planted_near_duplicates_point_to_their_source() -> None:
    ids, vectors, source_of = planted(n_sources=60, copies_per_source=3, noise=0.05)
    result = find_near_duplicates(ids, vectors, THRESHOLD)

    assert result.index_kind == "flat"
    got = by_id(result.decisions)
    assert [d.id for d in result.decisions] == ids
    for row_id, decision in got.items():
        if row_id in source_of:
            assert not decision.kept, row_id
            assert decision.reason == "near_duplicate"
            assert decision.duplicate_of == source_of[row_id]
            assert decision.similarity is not None and decision.similarity >= THRESHOLD
            # The reported similarity is the real cosine of the pair.
            src = ids.index(source_of[row_id])
            cosine = float(vectors[ids.index(row_id)] @ vectors[src])
            assert decision.similarity == pytest.approx(cosine, abs=1e-5)
        else:
            assert decision == DedupDecision(row_id, kept=True)


def test_decisions_do_not_depend_on_input_order() -> None:
    ids, vectors, _ = planted(n_sources=80, copies_per_source=2, noise=0.085, seed=3)
    reference = by_id(find_near_duplicates(ids, vectors, THRESHOLD).decisions)
    assert sum(not d.kept for d in reference.values()) > 0

    rng = np.random.default_rng(7)
    for _ in range(3):
        perm = rng.permutation(len(ids))
        shuffled = find_near_duplicates([ids[i] for i in perm], vectors[perm], THRESHOLD)
        assert [d.id for d in shuffled.decisions] == [ids[i] for i in perm]
        assert by_id(shuffled.decisions) == reference


def on_circle(*degrees: float) -> np.ndarray:
    """Unit vectors in a plane (padded to 3-D) at the given angles: cosine = cos(angle gap)."""
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians), np.zeros_like(radians)], axis=1).astype(
        np.float32
    )


def test_chain_drops_middle_only_and_keeps_the_far_end() -> None:
    # Documented rule: C's only match is B, which is itself dropped, so C is kept.
    # A~B and B~C at cos 20 deg = 0.94; A~C at cos 40 deg = 0.77.
    vectors = on_circle(0, 20, 40)
    decisions = by_id(find_near_duplicates(["a", "b", "c"], vectors, THRESHOLD).decisions)
    assert decisions["a"].kept
    assert decisions["b"].duplicate_of == "a" and decisions["b"].reason == "near_duplicate"
    assert decisions["c"].kept


def test_dropped_row_points_to_most_similar_earlier_kept_row() -> None:
    # "z" (24 deg) is within the threshold of "a" (0 deg, cos 0.914) and "b" (36.9 deg,
    # cos 0.975); a and b are both kept (cos 0.8), so z points to the closer one, b.
    vectors = on_circle(0, 36.87, 24)
    sims = vectors @ vectors.T
    assert sims[0, 1] < THRESHOLD <= sims[2, 0] < sims[2, 1]

    decisions = by_id(find_near_duplicates(["a", "b", "z"], vectors, THRESHOLD).decisions)
    assert decisions["a"].kept and decisions["b"].kept
    assert decisions["z"].duplicate_of == "b"
    assert decisions["z"].similarity == pytest.approx(float(sims[2, 1]), abs=1e-5)


def test_similarity_exactly_at_threshold_counts_as_duplicate() -> None:
    vectors = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)  # cosine 0.6 exactly in f32
    decisions = find_near_duplicates(["a", "b"], vectors, 0.6).decisions
    assert decisions[1].duplicate_of == "a"
    assert find_near_duplicates(["a", "b"], vectors, 0.61).decisions[1].kept


def test_zero_and_one_rows() -> None:
    empty = find_near_duplicates([], np.zeros((0, DIM), dtype=np.float32), THRESHOLD)
    assert empty.decisions == []
    one = find_near_duplicates(["x"], unit(np.ones((1, DIM))), THRESHOLD)
    assert one.decisions == [DedupDecision("x", kept=True)]
    assert deduplicate([], [], np.zeros((0, DIM), dtype=np.float32), THRESHOLD) == []
    assert deduplicate(["x"], ["hi"], unit(np.ones((1, DIM))), THRESHOLD) == [
        DedupDecision("x", kept=True)
    ]


def test_float64_embeddings_are_accepted_without_touching_the_input() -> None:
    ids, vectors, source_of = planted(n_sources=10, copies_per_source=1, noise=0.05)
    as64 = vectors.astype(np.float64)
    before = as64.copy()
    decisions = by_id(find_near_duplicates(ids, as64, THRESHOLD).decisions)
    assert all(decisions[c].duplicate_of == s for c, s in source_of.items())
    np.testing.assert_array_equal(as64, before)


def test_approximate_index_agrees_with_exact_on_5000_vectors() -> None:
    ids, vectors, _ = planted(n_sources=2500, copies_per_source=1, noise=0.045, seed=11, dim=64)
    exact = find_near_duplicates(ids, vectors, THRESHOLD)
    approx = find_near_duplicates(ids, vectors, THRESHOLD, index_kind="ivf")
    auto_approx = find_near_duplicates(ids, vectors, THRESHOLD, exact_search_max=1000)

    assert (exact.index_kind, approx.index_kind, auto_approx.index_kind) == ("flat", "ivf", "ivf")
    dropped = sum(not d.kept for d in exact.decisions)
    assert dropped > 2000  # most planted copies are within the threshold
    # Same verdict and same representative; similarities differ in the last float bits only.
    agree = 0
    for e, a in zip(exact.decisions, approx.decisions, strict=True):
        if (e.id, e.kept, e.duplicate_of) == (a.id, a.kept, a.duplicate_of):
            agree += 1
            assert a.similarity == pytest.approx(e.similarity, abs=1e-5)
    assert agree / len(ids) >= 0.99
    assert approx.decisions == auto_approx.decisions


# --- combined ------------------------------------------------------------------------------


def test_deduplicate_runs_exact_first_then_near_among_survivors() -> None:
    rng = np.random.default_rng(5)
    base = unit(rng.standard_normal((4, DIM)))
    near_b = unit(base[1:2] + 0.03 * rng.standard_normal((1, DIM)))
    ids = ["e", "b", "a", "d", "c", "f"]
    texts = ["What is AI?", "tell me about cats", "what is ai", "", "Tell me about cats!", "x y"]
    # a/e are exact twins; b/c exact twins; d empty (zero vector is fine, it is never searched);
    # f is a near copy of b's vector with different text.
    vectors = np.vstack([base[0], base[1], base[0], np.zeros(DIM), base[1], near_b[0]])
    decisions = deduplicate(ids, texts, vectors.astype(np.float32), THRESHOLD)

    assert [d.id for d in decisions] == ids
    got = by_id(decisions)
    assert got["a"].kept and got["b"].kept
    assert got["e"].reason == "exact_duplicate" and got["e"].duplicate_of == "a"
    assert got["c"].reason == "exact_duplicate" and got["c"].duplicate_of == "b"
    assert got["d"].reason == "empty_text"
    assert got["f"].reason == "near_duplicate" and got["f"].duplicate_of == "b"
    assert got["f"].similarity is not None and got["f"].similarity >= THRESHOLD


def test_exact_drop_is_never_resurrected_and_near_points_only_to_kept_rows() -> None:
    # "a" and "b" have the same text; "c" has another text but b's vector. b is gone after the
    # exact pass, so c must point to a (the kept twin), not b.
    v = unit(np.ones((1, DIM)))[0]
    decisions = by_id(
        deduplicate(["b", "a", "c"], ["Hi", "hi", "other"], np.vstack([v, v, v]), 0.9)
    )
    assert decisions["b"].reason == "exact_duplicate"
    assert decisions["c"].duplicate_of == "a"


# --- bad inputs ----------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors() -> None:
    vectors = unit(np.ones((2, DIM)))
    with pytest.raises(ValueError, match="duplicate id 'q1'"):
        find_near_duplicates(["q1", "q1"], vectors, THRESHOLD)
    with pytest.raises(ValueError, match="duplicate id 'q1'"):
        deduplicate(["q1", "q1"], ["a", "b"], vectors, THRESHOLD)
    with pytest.raises(ValueError, match="2 ids but 3 embedding rows"):
        find_near_duplicates(["a", "b"], unit(np.ones((3, DIM))), THRESHOLD)
    with pytest.raises(ValueError, match="2 ids but 1 texts"):
        deduplicate(["a", "b"], ["x"], vectors, THRESHOLD)
    with pytest.raises(ValueError, match="2-D"):
        find_near_duplicates(["a", "b"], np.ones(2, dtype=np.float32), THRESHOLD)
    with pytest.raises(ValueError, match="float32"):
        find_near_duplicates(["a", "b"], np.ones((2, DIM), dtype=np.int64), THRESHOLD)
    for bad in (0, 0.0, -0.5, 1.01, float("nan"), True):
        with pytest.raises(ValueError, match=r"threshold must be a cosine similarity in \(0, 1\]"):
            find_near_duplicates(["a", "b"], vectors, bad)
    with pytest.raises(ValueError, match=r"L2-normalised.*'b'"):
        find_near_duplicates(["a", "b"], np.vstack([vectors[0], 2 * vectors[1]]), THRESHOLD)
    with pytest.raises(ValueError, match="'a' has NaN"):
        find_near_duplicates(["a", "b"], np.vstack([np.full(DIM, np.nan), vectors[1]]), 0.9)
    with pytest.raises(TypeError, match="ids must be str"):
        find_exact_duplicates([1, 2], ["a", "b"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="index_kind"):
        find_near_duplicates(["a", "b"], vectors, THRESHOLD, index_kind="hnsw")  # type: ignore[arg-type]
