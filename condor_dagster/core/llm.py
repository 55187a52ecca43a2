"""The LLM request/completion types every stage uses, plus content hashing and parsing.

Pure logic: no dagster, no vllm. The resources in `condor_dagster.resources.llm` turn
`LLMRequest`s into `Completion`s; everything here is shared by every backend so that a rerun
hashes, seeds and parses identically whichever engine produced the text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Role = Literal["system", "user", "assistant"]

# Seeds are kept in the positive int32 range: every engine (vLLM, OpenAI-compatible servers,
# torch generators) accepts it.
_SEED_MASK = 0x7FFF_FFFF


class ChatMessage(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str


class SamplingParams(BaseModel):
    """Sampling settings of one request; validated when built, so bad values fail early."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    """Softmax temperature; 0 is greedy."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    top_k: int = Field(default=0, ge=0)
    """Keep the k most likely tokens; 0 keeps all."""
    max_tokens: int = Field(default=512, ge=1)
    """Upper bound on generated tokens; must fit in the engine's max_model_len."""
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    """>1 discourages repeats (Kun uses 1.2)."""
    stop: tuple[str, ...] = ()
    """Strings that end generation early."""
    seed: int | None = Field(default=None, ge=0)
    """Fixed seed; None derives one from the request content (reproducible reruns)."""

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperature_not_negative(cls, value: Any) -> Any:
        if isinstance(value, int | float) and value < 0:
            raise ValueError(
                f"temperature must be >= 0 (0 = greedy), got {value}; use 0.0 to 1.0 for chat"
            )
        return value

    def key_fields(self) -> dict[str, Any]:
        """The fields that change the output, without the seed (hashed separately)."""
        data = self.model_dump(mode="json")
        data.pop("seed")
        return data


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """Chat messages + sampling params + an optional pydantic model for structured output.

    `sample_index` tells apart deliberate repeats of the same prompt: it enters the derived
    seed, so request k of n is reproducible and differs from request k+1.
    """

    messages: tuple[ChatMessage, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    schema: type[BaseModel] | None = None
    sample_index: int = 0

    @classmethod
    def chat(
        cls,
        messages: list[dict[str, str]] | list[ChatMessage],
        sampling: SamplingParams | None = None,
        schema: type[BaseModel] | None = None,
        sample_index: int = 0,
    ) -> LLMRequest:
        msgs = tuple(
            m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in messages
        )
        if not msgs:
            raise ValueError("a request needs at least one chat message, got none")
        return cls(msgs, sampling or SamplingParams(), schema, sample_index)

    def messages_as_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def json_schema(self) -> dict[str, Any] | None:
        return schema_of(self.schema)


def schema_of(model: type[BaseModel] | None) -> dict[str, Any] | None:
    """The JSON schema sent to the engine for structured output."""
    return None if model is None else model.model_json_schema()


def _sha256(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _content(request: LLMRequest) -> dict[str, Any]:
    return {
        "messages": request.messages_as_dicts(),
        "sampling": request.sampling.key_fields(),
        "schema": request.json_schema(),
        "sample_index": request.sample_index,
    }


def derive_seed(request: LLMRequest, base_seed: int = 0) -> int:
    """The seed a request runs with: its own, or one derived from its content and base_seed."""
    if request.sampling.seed is not None:
        return request.sampling.seed
    digest = _sha256({"base_seed": base_seed, **_content(request)})
    return int(digest[:8], 16) & _SEED_MASK


def request_key(request: LLMRequest, seed: int, engine_identity: dict[str, Any]) -> str:
    """Content address of a request: (model + output-changing engine settings, messages,
    sampling params, schema, seed). Equal keys must give equal completions."""
    return _sha256({"engine": engine_identity, "seed": seed, **_content(request)})


@dataclass(frozen=True, slots=True)
class RawCompletion:
    """What a backend returns (and the cache stores): text and accounting, no parsing."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished request. `parsed` is the validated schema instance when the request had a
    schema and parsing succeeded; otherwise `parse_error` says why (truncated, invalid JSON,
    schema mismatch). A bad completion never raises: it is a row with a reason."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str
    engine: str
    engine_version: str
    seed: int
    key: str
    cached: bool
    parsed: BaseModel | None = None
    parse_error: str | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


def parse_structured(
    text: str, finish_reason: str, schema: type[BaseModel] | None
) -> tuple[BaseModel | None, str | None]:
    """Validate `text` against `schema`; return (value, None) or (None, reason).

    Raw control characters inside JSON strings are accepted (and removed from the values):
    grammar-guided decoders let them through, and they are noise, not a broken answer."""
    if schema is None:
        return None, None
    if finish_reason == "length":
        return None, "truncated: generation hit max_tokens before the JSON closed"
    try:
        return schema.model_validate_json(text), None
    except ValidationError as exc:
        lenient = (
            _parse_lenient(text, schema) if exc.errors()[0].get("type") == "json_invalid" else None
        )
        if lenient is not None:
            return lenient, None
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "<root>"
        kind = "invalid_json" if first.get("type") == "json_invalid" else "schema_mismatch"
        return None, f"{kind}: {where}: {first.get('msg')}"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _strip_controls(value: Any) -> Any:
    if isinstance(value, str):
        return _CONTROL.sub("", value)
    if isinstance(value, list):
        return [_strip_controls(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_controls(v) for k, v in value.items()}
    return value


def _parse_lenient(text: str, schema: type[BaseModel]) -> BaseModel | None:
    """JSON with raw control characters in strings (json's strict=False), cleaned."""
    try:
        return schema.model_validate(_strip_controls(json.loads(text, strict=False)))
    except (ValueError, ValidationError):
        return None


# What pure stages call to reach the LLM: the resource's `generate`, reduced to completions.
GenerateFn = Callable[[Sequence[LLMRequest]], Sequence[Completion]]


@dataclass
class GenerationStats:
    """Counters of one `generate` call, for asset metadata and logs."""

    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generated_completion_tokens: int = 0
    generation_seconds: float = 0.0
    parse_failures: int = 0
    truncated: int = 0
    finish_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens generated (not replayed from cache) per wall-clock second."""
        if self.generation_seconds <= 0:
            return 0.0
        return self.generated_completion_tokens / self.generation_seconds

    def add(self, completion: Completion) -> None:
        self.requests += 1
        if completion.cached:
            self.cache_hits += 1
        else:
            self.cache_misses += 1
            self.generated_completion_tokens += completion.completion_tokens
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.parse_failures += completion.parse_error is not None
        self.truncated += completion.truncated
        reason = completion.finish_reason
        self.finish_reasons[reason] = self.finish_reasons.get(reason, 0) + 1

    @classmethod
    def merged(cls, parts: list[GenerationStats]) -> GenerationStats:
        """Counters of several calls added up (their generation times too)."""
        total = cls()
        for part in parts:
            for name in (
                "requests",
                "cache_hits",
                "cache_misses",
                "prompt_tokens",
                "completion_tokens",
                "generated_completion_tokens",
                "parse_failures",
                "truncated",
            ):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            total.generation_seconds += part.generation_seconds
            for reason, count in part.finish_reasons.items():
                total.finish_reasons[reason] = total.finish_reasons.get(reason, 0) + count
        return total

    def as_metadata(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_per_second": round(self.tokens_per_second, 2),
            "parse_failures": self.parse_failures,
            "truncated": self.truncated,
            "finish_reasons": dict(self.finish_reasons),
        }
