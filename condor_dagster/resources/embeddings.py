"""Sentence embeddings for deduplication and diversity checks: `embed(texts) -> (n, dim)` float32.

Loading a SentenceTransformer takes seconds and hundreds of MB, while Dagster builds a fresh
resource instance for every run and step. The loaded models therefore live in a process-wide
registry keyed by (resolved model path, device), guarded by a lock, so each model loads once per
process however many resource instances, runs or threads ask for it. sentence_transformers and
torch are imported only when a model is first needed, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from pydantic import Field, field_validator

from condor_dagster.core.bundled_encoder import BUNDLED_MODEL_ID, bundled_model_path, check_device

_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def load_model(model_path: Path, device: str) -> Any:
    """The process-wide SentenceTransformer for (model_path, device), loaded on first use."""
    key = (str(model_path.expanduser().resolve()), device)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(key[0], device=device)
            _MODELS[key] = model
        return model


class SentenceTransformerEmbeddings(dg.ConfigurableResource):
    """Embeds texts with a local sentence-transformers model; rows are L2-normalised float32."""

    model_path: str | None = None
    """sentence-transformers model directory; None uses the bundled all-MiniLM-L6-v2."""
    batch_size: int = Field(default=64, ge=1)
    """Texts per forward pass."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N or mps."""

    @field_validator("model_path")
    @classmethod
    def _model_path_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().exists():
            raise ValueError(
                f"embedding model path {value!r} does not exist; leave model_path unset to use "
                f"the bundled {BUNDLED_MODEL_ID} or point it at a sentence-transformers directory"
            )
        return value

    @field_validator("device")
    @classmethod
    def _device_known(cls, value: str) -> str:
        return check_device(value, what="embedding")

    def resolved_model_path(self) -> Path:
        if self.model_path is None:
            return bundled_model_path()
        return Path(self.model_path).expanduser().resolve()

    def model(self) -> Any:
        """The shared SentenceTransformer behind this resource (loaded once per process)."""
        return load_model(self.resolved_model_path(), self.device)

    def model_id(self) -> str:
        """Short model name to record in lineage."""
        if self.model_path is None:
            return BUNDLED_MODEL_ID
        return self.resolved_model_path().name

    def dimension(self) -> int:
        model = self.model()
        get_dim = getattr(model, "get_embedding_dimension", None)
        dim = get_dim() if get_dim is not None else model.get_sentence_embedding_dimension()
        if dim is None:
            raise RuntimeError(f"embedding model {self.model_id()!r} reports no dimension")
        return int(dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts` in order: float32, C-contiguous, shape (n, dim), unit rows."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension()), dtype=np.float32)
        vectors = self.model().encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
