"""Deterministic exact and semantic near-duplicate decisions for generated texts.

Pure logic: no dagster, and faiss is imported only inside the approximate search.

Decision rule (both kinds): rows are processed in ascending id order (plain string order) and
a row is dropped only in favour of a row that comes earlier in that order and is itself kept.
So the outcome depends only on the set of (id, text, embedding) rows, never on the order in
which rows arrive (materialization order, partition order, shuffles).

- Exact: texts are compared after `normalize_for_exact`; among equal texts the smallest id is
  kept. A text that normalizes to "" is dropped as "empty_text".
- Near: embeddings are L2-normalised, so cosine similarity is the inner product. A row is
  dropped as "near_duplicate" of the earlier *kept* row with the highest similarity
  >= threshold (ties: the smaller id); with no such row it is kept. Chains do not collapse:
  with A~B, B~C but A!~C, B goes (duplicate of A) and C stays, because C's only match B was
  dropped. Every dropped row is within the threshold of its kept `duplicate_of`, and no two
  kept rows are (for the exact index; the approximate one can miss pairs).
"""

from __future__ import annotations

import math
import numbers
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

DropReason = Literal["exact_duplicate", "near_duplicate", "empty_text"]
IndexKind = Literal["auto", "flat", "ivf"]

# Exhaustive search tiles: query rows x database rows of float32 scores (32 MiB). The tile is a
# multiple of the block, so a block's diagonal lies inside one tile.
_FLAT_QUERY_BLOCK = 2048
_FLAT_COLUMN_TILE = 4096
# Approximate search: most scores in one query-block x list-members matrix (32 MiB).
_IVF_SCORES = 8 * 1024 * 1024
# Embeddings must be unit length for inner product to be cosine; sentence-transformers'
# normalised float32 output is within ~1e-6.
_NORM_TOLERANCE = 1e-3
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class DedupDecision:
    """What happened to one input row, and why."""

    id: str
    kept: bool
    reason: DropReason | None = None
    duplicate_of: str | None = None
    similarity: float | None = None
    """Cosine similarity to `duplicate_of` (1.0 for an exact duplicate)."""


@dataclass(frozen=True, slots=True)
class NearDuplicateResult:
    """Near-duplicate decisions in input order, and the FAISS index that found them."""

    decisions: list[DedupDecision]
    index_kind: Literal["flat", "ivf"]


def normalize_for_exact(text: str) -> str:
    """Canonical form for exact matching: NFKC, casefold, single spaces, no end punctuation.

    "What is AI?" and "what is  ai" both become "what is ai"; inner punctuation stays.
    """
    # NFKC again after casefold: casefolding can leave non-normalised sequences.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    collapsed = _WHITESPACE.sub(" ", folded)
    start, end = 0, len(collapsed)
    while start < end and _is_end_trimmable(collapsed[start]):
        start += 1
    while end > start and _is_end_trimmable(collapsed[end - 1]):
        end -= 1
    return collapsed[start:end]


def _is_end_trimmable(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def find_exact_duplicates(ids: Sequence[str], texts: Sequence[str | None]) -> list[DedupDecision]:
    """Exact-duplicate and empty-text decisions, in input order (None counts as empty)."""
    _check_ids(ids)
    if len(texts) != len(ids):
        raise ValueError(f"got {len(ids)} ids but {len(texts)} texts")
    normalized = [normalize_for_exact(text) if text is not None else "" for text in texts]
    keeper_by_text: dict[str, str] = {}
    for row_id, norm in zip(ids, normalized, strict=True):
        if norm and (norm not in keeper_by_text or row_id < keeper_by_text[norm]):
            keeper_by_text[norm] = row_id
    decisions = []
    for row_id, norm in zip(ids, normalized, strict=True):
        if not norm:
            decisions.append(DedupDecision(row_id, kept=False, reason="empty_text"))
        elif keeper_by_text[norm] == row_id:
            decisions.append(DedupDecision(row_id, kept=True))
        else:
            decisions.append(
                DedupDecision(
                    row_id,
                    kept=False,
                    reason="exact_duplicate",
                    duplicate_of=keeper_by_text[norm],
                    similarity=1.0,
                )
            )
    return decisions


def find_near_duplicates(
    ids: Sequence[str],
    embeddings: npt.ArrayLike,
    threshold: float,
    *,
    exact_search_max: int = 200_000,
    index_kind: IndexKind = "auto",
    nprobe: int = 8,
) -> NearDuplicateResult:
    """Near-duplicate decisions (see the module docstring) for L2-normalised embeddings.

    `index_kind="auto"` searches exhaustively (blocked float32 matrix products) up to
    `exact_search_max` rows and with an inverted-file index (`IndexIVFFlat`, `nprobe` lists
    probed per query) above; "flat" or "ivf" force one. Both are range searches, so a large
    duplicate cluster is never cut at some k; IVF may miss pairs whose vectors fall in
    lists that are not probed, which keeps a duplicate (never drops a non-duplicate).
    """
    _check_ids(ids)
    _check_threshold(threshold)
    vectors = _check_embeddings(ids, embeddings)
    if index_kind not in ("auto", "flat", "ivf"):
        raise ValueError(f"index_kind must be 'auto', 'flat' or 'ivf', got {index_kind!r}")
    if nprobe < 1:
        raise ValueError(f"nprobe must be >= 1, got {nprobe}")
    n = len(ids)
    kind: Literal["flat", "ivf"] = (
        index_kind if index_kind != "auto" else ("flat" if n <= exact_search_max else "ivf")
    )
    # Work in ascending id order so every FAISS call sees the same matrices whatever the input
    # order: float results (and so threshold decisions) are then bit-identical.
    order = sorted(range(n), key=ids.__getitem__)
    sorted_vectors = vectors[order] if n else vectors
    duplicate_of, similarity = _greedy_near_duplicates(sorted_vectors, threshold, kind, nprobe)

    decisions: list[DedupDecision | None] = [None] * n
    for rank, row in enumerate(order):
        earlier = int(duplicate_of[rank])
        if earlier < 0:
            decisions[row] = DedupDecision(ids[row], kept=True)
        else:
            decisions[row] = DedupDecision(
                ids[row],
                kept=False,
                reason="near_duplicate",
                duplicate_of=ids[order[earlier]],
                similarity=float(similarity[rank]),
            )
    return NearDuplicateResult([d for d in decisions if d is not None], kind)


@dataclass(frozen=True)
class DedupResult:
    """Exact-then-near decisions and the vectors that were searched."""

    decisions: list[DedupDecision]
    """One per input row, in input order."""
    searched: list[int]
    """Input rows that survived the exact pass and were searched for near duplicates."""
    vectors: np.ndarray
    """Their embeddings, row-aligned with `searched`."""
    index_kind: str
    """The index the near search used (flat or ivf)."""


def exact_then_near(
    ids: Sequence[str],
    texts: Sequence[str | None],
    vectors_of: Callable[[list[int]], npt.ArrayLike],
    threshold: float,
    *,
    exact_search_max: int = 200_000,
    index_kind: IndexKind = "auto",
    nprobe: int = 8,
) -> DedupResult:
    """The one dedup pass every stage uses: exact decisions first, then near-duplicate
    decisions among the rows still kept. `vectors_of(rows)` gives the embeddings of those input
    rows only (embedded now, or looked up from storage), so exact duplicates cost nothing."""
    _check_ids(ids)
    _check_threshold(threshold)
    exact = find_exact_duplicates(ids, texts)
    searched = [row for row, decision in enumerate(exact) if decision.kept]
    vectors = np.asarray(vectors_of(searched), dtype=np.float32)
    near = find_near_duplicates(
        [ids[row] for row in searched],
        vectors,
        threshold,
        exact_search_max=exact_search_max,
        index_kind=index_kind,
        nprobe=nprobe,
    )
    decisions = list(exact)
    for row, decision in zip(searched, near.decisions, strict=True):
        decisions[row] = decision
    return DedupResult(decisions, searched, vectors, near.index_kind)


def deduplicate(
    ids: Sequence[str],
    texts: Sequence[str | None],
    embeddings: npt.ArrayLike,
    threshold: float,
    *,
    exact_search_max: int = 200_000,
    index_kind: IndexKind = "auto",
    nprobe: int = 8,
) -> list[DedupDecision]:
    """`exact_then_near` over a row-aligned embedding matrix; rows dropped as exact or empty
    are never searched (their vectors may be anything finite, e.g. zeros). Decisions in input
    order."""
    _check_ids(ids)
    vectors = _check_embeddings(ids, embeddings, require_unit=False)
    return exact_then_near(
        ids,
        texts,
        lambda rows: vectors[rows],
        threshold,
        exact_search_max=exact_search_max,
        index_kind=index_kind,
        nprobe=nprobe,
    ).decisions


def _greedy_near_duplicates(
    vectors: np.ndarray, threshold: float, kind: Literal["flat", "ivf"], nprobe: int
) -> tuple[np.ndarray, np.ndarray]:
    """For rows already in id order: index of the kept row each is a duplicate of (-1: kept).

    Each pair is scored once, from its later row, so the search does half of the n x n work.
    """
    n = len(vectors)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.zeros(n, dtype=np.float32)
    if n < 2:
        return duplicate_of, similarity

    limit = np.float32(threshold)
    pairs = _flat_pairs(vectors, limit) if kind == "flat" else _ivf_pairs(vectors, limit, nprobe)
    kept = np.ones(n, dtype=bool)
    # Blocks come in ascending query order, so every neighbour's fate is known when asked.
    for queries, neighbours, sims in pairs:
        # Per query: best similarity first, then the smaller id.
        by_query = np.lexsort((neighbours, -sims, queries))
        decided = -1
        for query, neighbour, sim in zip(
            queries[by_query].tolist(),
            neighbours[by_query].tolist(),
            sims[by_query].tolist(),
            strict=True,
        ):
            if query != decided and kept[neighbour]:
                kept[query] = False
                duplicate_of[query] = neighbour
                similarity[query] = sim
                decided = query
    return duplicate_of, similarity


Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


def _flat_pairs(vectors: np.ndarray, limit: np.float32) -> Iterator[Pairs]:
    """Exhaustive search: per block of query rows, every (query, earlier row, similarity)
    with similarity >= limit, from float32 sgemm tiles over the lower triangle only.

    A dense problem bound by the BLAS: n^2 / 2 pairs of d multiply-adds, n^2 * d flops. Tiles
    stay in cache, the threshold test is one vectorised pass per tile, and Python only sees
    the rows that have a match."""
    n = len(vectors)
    block, tile = _FLAT_QUERY_BLOCK, _FLAT_COLUMN_TILE
    scores = np.empty((block, tile), dtype=np.float32)
    # Scores on and above the diagonal (a row against itself or later rows) are masked out.
    upper = np.triu(np.ones((block, block), dtype=bool))
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = stop - start
        queries = vectors[start:stop]
        found_q, found_n, found_s = [], [], []
        for col in range(0, stop, tile):
            col_stop = min(col + tile, stop)
            out = scores[:rows, : col_stop - col]
            np.matmul(queries, vectors[col:col_stop].T, out=out)
            if col_stop == stop:  # the tile holding this block's diagonal (tile % block == 0)
                np.putmask(out[:, start - col :], upper[:rows, :rows], -np.inf)
            hit_rows = np.flatnonzero(out.max(axis=1) >= limit)
            if not len(hit_rows):
                continue
            sub = out[hit_rows]
            local_q, local_n = np.nonzero(sub >= limit)
            found_s.append(sub[local_q, local_n])
            found_q.append(hit_rows[local_q] + start)
            found_n.append(local_n + col)
        if found_q:
            yield np.concatenate(found_q), np.concatenate(found_n), np.concatenate(found_s)


def _ivf_pairs(vectors: np.ndarray, limit: np.float32, nprobe: int) -> Iterator[Pairs]:
    """Approximate search, inverted-file style: k-means splits the rows into lists, every row
    lives in the list of its nearest centroid, and a query looks only in the lists of its
    `nprobe` nearest centroids. Within a list the scores are one float32 matrix product of the
    list's queries against its members, so the work runs at BLAS speed (FAISS's own IVF range
    search scans per query, ~10x slower per pair here). Pairs in lists a query does not probe
    are missed."""
    n = len(vectors)
    nlist = _list_count(n, nprobe)
    if nlist == 1:  # too few rows to split: the exact search is the cheaper one
        yield from _flat_pairs(vectors, limit)
        return
    probes = min(nprobe, nlist)
    nearest = _nearest_lists(vectors, nlist, probes)
    members = _group(nearest[:, 0], nlist)
    askers = _group(nearest.ravel(), nlist, stride=probes)
    found_q, found_n, found_s = [], [], []
    for lst in range(nlist):
        rows, queries = members[lst], askers[lst]
        if not len(rows) or not len(queries):
            continue
        database = vectors[rows]
        # Bound one score matrix to ~8M floats however unbalanced the lists are.
        step = max(1, _IVF_SCORES // len(rows))
        for start in range(0, len(queries), step):
            asking = queries[start : start + step]
            scores = vectors[asking] @ database.T
            hit_rows = np.flatnonzero(scores.max(axis=1) >= limit)
            if not len(hit_rows):
                continue
            asking, scores = asking[hit_rows], scores[hit_rows]
            q_at, n_at = np.nonzero(scores >= limit)
            # Each pair once, from its later row (rows are in id order: the larger index);
            # filtered after the threshold, since matches are few.
            later = rows[n_at] < asking[q_at]
            q_at, n_at = q_at[later], n_at[later]
            if len(q_at):
                found_q.append(asking[q_at])
                found_n.append(rows[n_at])
                found_s.append(scores[q_at, n_at])
    if found_q:
        yield np.concatenate(found_q), np.concatenate(found_n), np.concatenate(found_s)


def _list_count(n: int, nprobe: int) -> int:
    """Lists that balance the two costs: assigning n rows to nlist centroids (n * nlist dot
    products) and scanning nprobe lists of n / nlist rows per query (n^2 * nprobe / nlist):
    nlist = sqrt(n * nprobe). At least 39 rows per list (FAISS's k-means minimum)."""
    return max(1, min(round(math.sqrt(n * nprobe)), n // 39))


def _nearest_lists(vectors: np.ndarray, nlist: int, probes: int) -> np.ndarray:
    """(n, probes) ids of each row's nearest k-means centroids, nearest first."""
    import faiss

    n, dim = vectors.shape
    # Train on an evenly spaced sample (not random) so the lists are a pure function of the
    # id-ordered input. The lists only need to split space, not to be optimal: 16 points per
    # centroid and 5 iterations keep training a small share of the search.
    sample = vectors[np.linspace(0, n - 1, num=min(n, 16 * nlist), dtype=np.int64)]
    kmeans = faiss.Kmeans(
        dim, nlist, niter=5, seed=1234, spherical=True, min_points_per_centroid=1, verbose=False
    )
    kmeans.train(sample)
    centroids = kmeans.centroids
    assert centroids is not None
    index = faiss.IndexFlatIP(dim)
    index.add(centroids)
    nearest = np.empty((n, probes), dtype=np.int64)
    step = 65_536
    for start in range(0, n, step):
        _, nearest[start : start + step] = index.search(vectors[start : start + step], probes)
    return nearest


def _group(labels: np.ndarray, groups: int, stride: int = 1) -> list[np.ndarray]:
    """Row indices per label, ascending within each group (`stride` labels per row)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(groups + 1))
    rows = order // stride
    return [rows[bounds[g] : bounds[g + 1]] for g in range(groups)]


def _check_ids(ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for row_id in ids:
        if not isinstance(row_id, str):
            raise TypeError(f"ids must be str, got {type(row_id).__name__}: {row_id!r}")
        if row_id in seen:
            raise ValueError(f"duplicate id {row_id!r}: every row needs a unique id")
        seen.add(row_id)


def _check_threshold(threshold: float) -> None:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not 0 < threshold <= 1
    ):
        raise ValueError(f"threshold must be a cosine similarity in (0, 1], got {threshold!r}")


def _check_embeddings(
    ids: Sequence[str], embeddings: npt.ArrayLike, *, require_unit: bool = True
) -> np.ndarray:
    """Validated float32 C-contiguous (n, d) array; float64 input is converted (a copy)."""
    array = np.asarray(embeddings)
    if array.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (rows, dims), got shape {array.shape}")
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype != np.float32:
        raise ValueError(f"embeddings must be float32 (or float64), got {array.dtype}")
    if array.shape[0] != len(ids):
        raise ValueError(f"got {len(ids)} ids but {array.shape[0]} embedding rows")
    if array.shape[0] and array.shape[1] == 0:
        raise ValueError("embeddings have 0 dimensions")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise ValueError(f"embedding of id {ids[bad]!r} has NaN or infinite values")
    if require_unit and len(array):
        norms = np.linalg.norm(array, axis=1)
        off = np.abs(norms - 1.0) > _NORM_TOLERANCE
        if off.any():
            bad = int(np.argmax(off))
            raise ValueError(
                f"embeddings must be L2-normalised (cosine = inner product); id {ids[bad]!r} "
                f"has norm {norms[bad]:.6f}"
            )
    return np.ascontiguousarray(array)
