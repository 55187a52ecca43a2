"""Synthetic inputs: embeddings shaped like sentence embeddings, and question texts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIM = 384  # all-MiniLM-L6-v2


@dataclass
class Embeddings:
    ids: list[str]
    vectors: np.ndarray
    copies: np.ndarray
    """Rows planted as paraphrases..."""
    sources: np.ndarray
    """...of these rows."""


def synthetic_embeddings(
    n: int, *, dim: int = DIM, seed: int = 0, duplicate_share: float = 0.1
) -> Embeddings:
    """`n` ids and L2-normalised float32 rows: topic clusters (rows of a topic share a
    direction, cosine about 0.25 between them, like questions on one tag) plus
    `duplicate_share` paraphrases of an earlier row at cosine 0.86-0.97, so the 0.9 threshold
    cuts through them. Ids are random hex, so a paraphrase sorts before or after its source."""
    rng = np.random.default_rng(seed)
    topics = max(1, n // 500)
    centres = rng.standard_normal((topics, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.empty((n, dim), dtype=np.float32)
    chunk = 65_536
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = rng.standard_normal((stop - start, dim), dtype=np.float32) / np.sqrt(dim)
        rows += centres[rng.integers(0, topics, stop - start)]
        vectors[start:stop] = rows
    copies = rng.choice(np.arange(1, n), size=int(n * duplicate_share), replace=False)
    sources = (rng.random(len(copies)) * copies).astype(np.int64)  # an earlier row
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, len(copies), chunk):
        part = slice(start, start + chunk)
        scale = rng.uniform(0.25, 0.6, size=(len(copies[part]), 1)).astype(np.float32)
        noise = rng.standard_normal((len(copies[part]), dim), dtype=np.float32) / np.sqrt(dim)
        vectors[copies[part]] = vectors[sources[part]] + scale * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"q-{value:016x}" for value in rng.integers(0, 2**63, size=n, dtype=np.int64)]
    if len(set(ids)) != n:  # 63-bit collisions: practically never, but ids must be unique
        ids = [f"{row_id}-{i}" for i, row_id in enumerate(ids)]
    return Embeddings(ids, vectors, copies, sources)


_OPENERS = [
    "How would you explain",
    "What are the first steps in",
    "Why do so many people struggle with",
    "Write a short poem about",
    "As a travel guide, describe",
    "Summarise the arguments for and against",
    "List five common mistakes in",
    "What changed in the last decade in",
]
_SUBJECTS = [
    "home solar panels",
    "adopting a rescue cat",
    "sourdough baking",
    "retirement savings",
    "learning the violin",
    "city bike lanes",
    "remote team meetings",
    "ancient Roman roads",
    "sleep hygiene",
    "electric car batteries",
    "board game design",
    "coral reef protection",
]
_FRAMES = [
    "for a complete beginner",
    "on a tight budget",
    "in a small apartment",
    "for a ten-year-old",
    "in under five minutes",
    "with a concrete example",
    "from a historian's point of view",
]


def synthetic_questions(n: int) -> list[str]:
    """`n` distinct question-like texts of typical length (10-25 words)."""
    out = []
    for i in range(n):
        opener = _OPENERS[i % len(_OPENERS)]
        subject = _SUBJECTS[(i // len(_OPENERS)) % len(_SUBJECTS)]
        frame = _FRAMES[(i // (len(_OPENERS) * len(_SUBJECTS))) % len(_FRAMES)]
        out.append(f"{opener} {subject} {frame}, case {i}?")
    return out
