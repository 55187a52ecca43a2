"""SentenceTransformerEmbeddings against the real bundled all-MiniLM-L6-v2 (no mocks)."""

from __future__ import annotations

import numpy as np
import pytest

from condor_dagster.resources import embeddings
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings

DIM = 384


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbeddings:
    return SentenceTransformerEmbeddings(batch_size=8)


def _assert_unit_rows(vectors: np.ndarray) -> None:
    norms = np.linalg.norm(vectors, axis=1)
    assert np.all(np.abs(norms - 1.0) < 1e-5), norms


def test_shape_dtype_and_norms(embedder: SentenceTransformerEmbeddings) -> None:
    texts = [f"Sentence number {i} about topic {i % 3}." for i in range(11)]
    vectors = embedder.embed(texts)
    assert vectors.shape == (11, DIM)
    assert vectors.dtype == np.float32
    assert vectors.flags.c_contiguous
    _assert_unit_rows(vectors)
    assert embedder.dimension() == DIM
    assert embedder.model_id() == "all-MiniLM-L6-v2"


def test_near_duplicates_score_higher_than_unrelated(
    embedder: SentenceTransformerEmbeddings,
) -> None:
    anchor, near_dup, unrelated = embedder.embed(
        [
            "How do I train a puppy to sit?",
            "How can I teach my puppy to sit?",
            "The stock market fell sharply on Tuesday.",
        ]
    )
    near = float(anchor @ near_dup)
    far = float(anchor @ unrelated)
    assert near > 0.7, near
    assert near - far > 0.4, (near, far)


def test_cjk_and_emoji(embedder: SentenceTransformerEmbeddings) -> None:
    vectors = embedder.embed(
        ["我想学习如何训练小狗坐下。", "子犬にお座りを教える方法", "🐶🐾✨🎉", "🙂"]
    )
    assert vectors.shape == (4, DIM)
    assert np.all(np.isfinite(vectors))
    _assert_unit_rows(vectors)


def test_empty_input(embedder: SentenceTransformerEmbeddings) -> None:
    vectors = embedder.embed([])
    assert vectors.shape == (0, DIM)
    assert vectors.dtype == np.float32


def test_model_loads_once_per_process(embedder: SentenceTransformerEmbeddings) -> None:
    embedder.embed(["warm up"])
    loaded = len(embeddings._MODELS)
    other = SentenceTransformerEmbeddings(batch_size=32)
    assert other.model() is embedder.model()
    other.embed(["no second load"])
    assert len(embeddings._MODELS) == loaded


def test_missing_model_path_raises(tmp_path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="does not exist") as excinfo:
        SentenceTransformerEmbeddings(model_path=missing)
    assert missing in str(excinfo.value)


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", ""])
def test_bad_device_raises(device: str) -> None:
    with pytest.raises(ValueError, match="device"):
        SentenceTransformerEmbeddings(device=device)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps"])
def test_good_devices_validate(device: str) -> None:
    # Validation only; nothing is loaded until embed() or dimension() is called.
    assert SentenceTransformerEmbeddings(device=device).device == device
