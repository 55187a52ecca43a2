"""A scripted LLM for tests that need controlled text (planted duplicates, a given critique).

It implements the same `LLMResource` interface as the real engines, so tests swap it in through
Dagster's resources. Rules match a regex against the last message; the first match answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import dagster as dg
from pydantic import Field, field_validator

from condor_dagster.core.llm import LLMRequest, RawCompletion
from condor_dagster.resources.llm import LLMBackendError, LLMResource, SinkFn


class ScriptRule(dg.Config):
    """Answer `response` to requests whose last message matches `pattern`."""

    pattern: str
    """Regular expression searched in the last message's content."""
    response: str
    """Completion text; `{sample_index}` and `{seed}` are substituted."""
    finish_reason: Literal["stop", "length"] = "stop"
    """Finish reason to report ("length" simulates truncation)."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern {value!r} is not a valid regular expression: {exc}") from exc
        return value


class ScriptedLLMResource(LLMResource):
    """Deterministic fake engine: text comes from `rules`, tokens are whitespace words."""

    rules: list[ScriptRule] = Field(default_factory=list)
    """Checked in order; the first whose pattern matches answers."""
    default_response: str = "scripted answer"
    """Text for requests no rule matches."""
    model_name: str = "scripted"
    """Model id recorded on completions."""
    fail_after: int | None = Field(default=None, ge=0)
    """Raise an infrastructure error after this many completions (fault tests)."""
    max_context: int | None = Field(default=None, ge=1)
    """Pretend context length, to exercise max_tokens validation."""

    def engine_identity(self) -> dict[str, Any]:
        # Only what changes the text: fault injection and cache settings must not.
        return {
            "engine": "scripted",
            "model": self.model_name,
            "rules": [rule.model_dump() for rule in self.rules],
            "default_response": self.default_response,
        }

    def engine_info(self) -> tuple[str, str, str]:
        return self.model_name, "scripted", "0"

    def context_length(self) -> int | None:
        return self.max_context

    def _generate_uncached(
        self, requests: Sequence[LLMRequest], seeds: Sequence[int], sink: SinkFn
    ) -> None:
        for i, (request, seed) in enumerate(zip(requests, seeds, strict=True)):
            if self.fail_after is not None and i >= self.fail_after:
                raise LLMBackendError(
                    f"scripted failure after {self.fail_after} completions (fail_after)"
                )
            last = request.messages[-1].content
            rule = next((r for r in self.rules if re.search(r.pattern, last)), None)
            template = rule.response if rule else self.default_response
            text = template.replace("{sample_index}", str(request.sample_index)).replace(
                "{seed}", str(seed)
            )
            prompt_tokens = sum(len(m.content.split()) for m in request.messages)
            sink(
                i,
                RawCompletion(
                    text=text,
                    finish_reason=rule.finish_reason if rule else "stop",
                    prompt_tokens=prompt_tokens,
                    completion_tokens=len(text.split()),
                    latency_s=0.0,
                ),
            )
