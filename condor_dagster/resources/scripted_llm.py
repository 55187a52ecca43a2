"""A scripted LLM for tests that need controlled text (planted duplicates, a given critique).

It implements the same `LLMResource` interface as the real engines, so tests swap it in through
Dagster's resources. Rules match a regex against the last message; the first match answers.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
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
    rendezvous_dir: str | None = None
    """Fault tests: when set, each generate call finishes only once `rendezvous_parties` calls
    (in any process) have reached this folder, so concurrent runs write their outputs together."""
    rendezvous_parties: int = Field(default=2, ge=1)
    """How many generate calls meet in rendezvous_dir."""
    rendezvous_timeout_s: float = Field(default=120.0, gt=0)
    """Longest wait for the other parties before failing."""

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
        if self.rendezvous_dir is not None:
            self._rendezvous(Path(self.rendezvous_dir))

    def _rendezvous(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{os.getpid()}-{uuid.uuid4().hex}").touch()
        deadline = time.monotonic() + self.rendezvous_timeout_s
        while (arrived := len(list(folder.iterdir()))) < self.rendezvous_parties:
            if time.monotonic() > deadline:
                raise LLMBackendError(
                    f"rendezvous in {folder}: {arrived} of {self.rendezvous_parties} generate "
                    f"calls arrived within {self.rendezvous_timeout_s:.0f}s"
                )
            time.sleep(0.01)
