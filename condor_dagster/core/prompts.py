"""Versioned prompt templates, namespaced by who owns them: `load_prompt("condor/questions",
"en")` reads condor_dagster/methods/condor/prompts/en/questions.yaml, and the shared stages'
templates live under the namespace "shared" (condor_dagster/stages/prompts/). Two methods may
then both have an `answer` prompt without clashing.

A template's sha (of its file bytes) goes into every row's lineage and into the asset's
code_version, so editing a prompt marks the partitions built with it as stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from string import Template

import yaml

from condor_dagster.core.llm import ChatMessage

LANGUAGES = ("en", "zh")


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt file: system + user templates with $placeholders."""

    name: str
    language: str
    version: int
    system: str
    user: str
    sha: str

    @property
    def key(self) -> str:
        return f"{self.name}/{self.language}"

    def render(self, **values: object) -> tuple[ChatMessage, ...]:
        """Chat messages with every $placeholder filled; a missing value raises KeyError."""
        text = {k: str(v) for k, v in values.items()}
        return (
            ChatMessage(role="system", content=Template(self.system).substitute(text).strip()),
            ChatMessage(role="user", content=Template(self.user).substitute(text).strip()),
        )


SHARED = "shared"
"""The namespace of the shared stages' templates (answer, critique, refine)."""


def prompt_folder(namespace: str) -> Traversable:
    """Where a namespace's templates live: the shared stages' or a method's `prompts/`."""
    root = files("condor_dagster")
    if namespace == SHARED:
        return root / "stages" / "prompts"
    return root / "methods" / namespace / "prompts"


@cache
def load_prompt(name: str, language: str = "en") -> PromptTemplate:
    """The packaged template `name` ("<namespace>/<template>", e.g. "condor/questions" or
    "shared/answer") in `language`."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    namespace, _, template = name.partition("/")
    if not namespace or not template or "/" in template:
        raise ValueError(
            f"prompt name {name!r} must be '<namespace>/<template>', e.g. 'condor/questions' "
            f"or '{SHARED}/answer'"
        )
    resource = prompt_folder(namespace) / language / f"{template}.yaml"
    if not resource.is_file():
        raise ValueError(f"no prompt template {name!r} for language {language!r} ({resource})")
    return parse_prompt(resource.read_bytes(), name=name)


def parse_prompt(raw: bytes, *, name: str | None = None) -> PromptTemplate:
    """A template from the bytes of a prompt file; its sha covers every byte. `name`: the
    qualified name it was loaded under (default: the file's own `name`)."""
    data = yaml.safe_load(raw)
    return PromptTemplate(
        name=name or data["name"],
        language=data["language"],
        version=int(data["version"]),
        system=data["system"],
        user=data["user"],
        sha=hashlib.sha256(raw).hexdigest()[:12],
    )


def prompts_sha(name: str) -> str:
    """One sha over every language of a template."""
    joined = "".join(load_prompt(name, lang).sha for lang in LANGUAGES)
    return hashlib.sha256(joined.encode()).hexdigest()[:12]


def code_version(prompt_shas: list[str], settings: dict[str, object]) -> str:
    """An LLM asset's code_version: its prompt templates and default generation settings, so
    editing either marks the partitions built before as stale in the UI."""
    blob = json.dumps({"prompts": prompt_shas, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
