"""Versioned prompt templates (condor_dagster/prompts/<language>/<name>.yaml) and the text
parsers for backends without structured output.

A template's sha (of its file bytes) goes into every row's lineage and into the asset's
code_version, so editing a prompt marks the partitions built with it as stale.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from string import Template

import yaml

from condor_dagster.core.llm import ChatMessage

LANGUAGES = ("en", "zh")

# The 7 Condor task types, described for the question prompt.
TASK_DESCRIPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "role_playing": ("Role Playing", "the user asks the assistant to act as a character"),
        "daily_chat": ("Daily Chat", "casual conversation a person would start"),
        "domain_knowledge_qa": ("Domain Knowledge QA", "questions that need expert knowledge"),
        "given_material_processing": (
            "Given Material Processing",
            "analyse or summarise text or data that the question itself includes",
        ),
        "response_format_control": (
            "Response Format Control",
            "the request sets explicit format, length or style constraints",
        ),
        "view": ("View", "ask for an opinion or a judgement"),
        "creation": ("Creation", "write an article, story, poem or design"),
    },
    "zh": {
        "role_playing": ("角色扮演", "用户请助手扮演某个角色"),
        "daily_chat": ("日常闲聊", "普通人会发起的日常对话"),
        "domain_knowledge_qa": ("领域知识问答", "需要专业知识才能回答的问题"),
        "given_material_processing": ("给定材料处理", "分析或总结问题中给出的文本或数据"),
        "response_format_control": ("回复格式控制", "请求中有明确的格式、长度或风格要求"),
        "view": ("观点", "询问看法或评价"),
        "creation": ("创作", "撰写文章、故事、诗歌或设计方案"),
    },
}


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


@cache
def load_prompt(name: str, language: str = "en") -> PromptTemplate:
    """The packaged template `name` in `language`."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    resource = files("condor_dagster") / "prompts" / language / f"{name}.yaml"
    if not resource.is_file():
        raise ValueError(f"no prompt template {name!r} for language {language!r} ({resource})")
    return parse_prompt(resource.read_bytes())


def parse_prompt(raw: bytes) -> PromptTemplate:
    """A template from the bytes of a prompt file; its sha covers every byte."""
    data = yaml.safe_load(raw)
    return PromptTemplate(
        name=data["name"],
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


_MARKUP = re.compile(r"\[(easy|medium|hard)\]\s*(.*?)(?=\[(?:easy|medium|hard)\]|\Z)", re.I | re.S)


def parse_question_markup(text: str) -> dict[str, str] | None:
    """Parse the fallback form "[Easy] ... [Medium] ... [Hard] ..."; None unless all three
    are present."""
    found: dict[str, str] = {}
    for level, body in _MARKUP.findall(text):
        found.setdefault(level.lower(), body.strip())
    if set(found) != {"easy", "medium", "hard"}:
        return None
    return found
