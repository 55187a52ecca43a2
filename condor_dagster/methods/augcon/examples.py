"""AugCon's few-shot QA examples: (context, question, answer) records in a JSONL file.

The project ships ten per language (data/qa_examples.<lang>.jsonl) for the demo; users point
at their own file. The question prompts show them as examples of good questions, the answer
stage's self-check turns the ones the model answers correctly into demonstrations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from condor_dagster.core.language import PromptLanguage, prompt_language


class QAExample(BaseModel):
    """One example: a context, a question it answers and the reference answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    context: str
    """The passage the question is about."""
    question: str
    """A good question the passage answers."""
    answer: str
    """The reference answer, grounded in the passage."""

    @field_validator("context", "question", "answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty or whitespace")
        return value.strip()


def shipped_examples_path(language: str) -> Path:
    """The project's example file for a row language ("en-us" -> the English one)."""
    lang: PromptLanguage = prompt_language(language)
    resource = files("condor_dagster") / "methods" / "augcon" / "data" / f"qa_examples.{lang}.jsonl"
    return Path(str(resource))


def load_examples(path: Path | str) -> list[QAExample]:
    """Every record of a JSONL file of examples; a bad line raises ValueError naming the file,
    the line number and what is wrong with it. Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"QA examples file {str(path)!r} does not exist (a JSONL file of "
            '{"context", "question", "answer"} records)'
        )
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number} is not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is not a JSON object")
        try:
            examples.append(QAExample.model_validate(record))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}"
                for e in error.errors()
            )
            raise ValueError(f"{path}: line {number}: {problems}") from None
    if not examples:
        raise ValueError(f"QA examples file {str(path)!r} holds no records")
    return examples


_LABELS = {"en": ("Context", "Question", "Answer"), "zh": ("上下文", "问题", "答案")}


def format_examples(examples: Sequence[QAExample], *, language: str, with_answers: bool) -> str:
    """The examples as a numbered block for a prompt in `language`'s labels (with their
    answers, for demonstrations)."""
    context, question, answer = _LABELS[prompt_language(language)]
    colon = "：" if prompt_language(language) == "zh" else ": "
    blocks = []
    for number, example in enumerate(examples, start=1):
        lines = [
            f"[{number}]",
            f"{context}{colon}{example.context}",
            f"{question}{colon}{example.question}",
        ]
        if with_answers:
            lines.append(f"{answer}{colon}{example.answer}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
