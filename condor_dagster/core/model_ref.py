"""Model references: a local directory or a Hugging Face id, checked before any engine starts."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Files whose content defines what a checkpoint generates; weights are fingerprinted by size and
# their first MiB, which tells rebuilt-but-different weights apart without reading gigabytes.
_DEFINING_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
_WEIGHT_HEAD_BYTES = 1 << 20


def check_model_ref(model: str) -> str:
    """Return `model` if it names an existing model directory or a Hugging Face id, else raise
    ValueError naming the value and the fix."""
    if not model or not model.strip():
        raise ValueError(
            "model must be a local model directory or a Hugging Face id "
            "(e.g. Qwen/Qwen2.5-7B-Instruct), got an empty string"
        )
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ValueError(
                f"model path {model!r} is not a model directory (no config.json inside); "
                "point it at a Hugging Face checkpoint directory"
            )
        return model
    looks_like_path = model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1
    if looks_like_path or not _HUB_ID.match(model):
        raise ValueError(
            f"model path {model!r} does not exist; install a known model with "
            "`condor models install smollm2-135m-instruct` (`condor models` lists them), build "
            f"the offline test model with `condor tiny-model {model}`, or give a Hugging Face id "
            "such as Qwen/Qwen2.5-7B-Instruct"
        )
    return model


def model_fingerprint(model: str) -> str:
    """A short content hash of a local model directory (configs, tokenizer, weights' sizes and
    heads), so a cache entry never outlives the weights that made it. Hub ids hash as-is."""
    path = Path(model).expanduser()
    digest = hashlib.sha256()
    if not path.is_dir():
        digest.update(model.encode())
        return digest.hexdigest()[:16]
    for name in _DEFINING_FILES:
        file = path / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(file.read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
        with weights.open("rb") as fh:
            digest.update(fh.read(_WEIGHT_HEAD_BYTES))
    return digest.hexdigest()[:16]
