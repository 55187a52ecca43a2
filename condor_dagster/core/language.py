"""Language codes of rows and prompts.

Rows carry BCP 47-style codes from the taxonomy ("en", "zh", "zh-Hans", "zh-CN", ...), while
prompt templates exist for "en" and "zh" only. Every stage maps a row's code to its prompt and
text rules through these two functions, so "zh-Hans" is never treated as English.
"""

from __future__ import annotations

from typing import Literal

PromptLanguage = Literal["en", "zh"]


def is_chinese(language: str) -> bool:
    """Whether `language` is a Chinese code: any code whose primary subtag is "zh" ("zh",
    "zh-Hans", "zh_CN", "ZH-TW"); "zhx" or "en-zh" are not."""
    code = language.strip().casefold().replace("_", "-")
    return code == "zh" or code.startswith("zh-")


def prompt_language(language: str) -> PromptLanguage:
    """The prompt template language for a row's `language`: "zh" for Chinese codes, else "en"
    (English prompts ask the model to answer in the language of the question)."""
    return "zh" if is_chinese(language) else "en"
