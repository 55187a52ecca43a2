"""AugCon's query scorer as a Dagster resource: trains a scorer folder and scores pairs with it.

Thin on purpose: the logic lives in condor_dagster.methods.augcon.scorer (no dagster there);
the loaded model is the process-wide one from `load_scorer`, so fresh resource instances per run
or step do not reload it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg
from pydantic import Field, field_validator

from condor_dagster.core.bundled_encoder import check_device
from condor_dagster.methods.augcon.scorer import (
    ScorerSettings,
    TrainingRecord,
    Triplet,
    load_scorer,
    torch_threads,
    train_scorer,
)


class QueryScorerResource(dg.ConfigurableResource):
    """Trains AugCon's query scorer and scores (context, question) pairs with a trained one."""

    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N or mps."""
    batch_size: int = Field(default=64, ge=1)
    """Pairs per forward pass when scoring."""
    threads: int | None = Field(default=None, ge=1)
    """torch CPU threads for scoring, and for training when the settings leave threads unset;
    None keeps torch's default."""

    @field_validator("device")
    @classmethod
    def _device_known(cls, value: str) -> str:
        return check_device(value, what="query scorer")

    def train(
        self, triplets: Sequence[Triplet], *, settings: ScorerSettings, out_dir: Path | str
    ) -> TrainingRecord:
        """Train on `triplets` and save the scorer folder to `out_dir` (atomically)."""
        if settings.threads is None and self.threads is not None:
            settings = settings.model_copy(update={"threads": self.threads})
        return train_scorer(triplets, settings=settings, out_dir=Path(out_dir), device=self.device)

    def score(self, model_dir: str, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Raw scores (higher is better) of (context, question) pairs under the scorer saved in
        `model_dir`."""
        scorer = load_scorer(model_dir, device=self.device)
        with torch_threads(self.threads):
            return scorer.score(pairs, batch_size=self.batch_size)
