"""engine_smoke_test: a small structured-output batch through the configured LLM resource.

It proves the engine end to end (load, chat template, batching, structured outputs, cache) and
shows in the UI what every LLM stage reports. The Condor stages reuse `generation_metadata`.
"""

import dagster as dg
from pydantic import BaseModel, Field

from condor_dagster.core.llm import GenerationStats, LLMRequest, SamplingParams
from condor_dagster.resources.llm import LLMResource
from condor_dagster.stages.metadata import generation_metadata
from condor_dagster.stages.partitions import GPU_POOL


class SmokeAnswer(BaseModel):
    """Structured reply of the smoke test."""

    topic: str = Field(max_length=200)
    answer: str = Field(max_length=2000)


class EngineSmokeConfig(dg.Config):
    """Size of the smoke batch."""

    requests: int = Field(default=32, ge=1, le=100_000)
    """How many chat requests to send (half with a JSON schema)."""
    max_tokens: int = Field(default=96, ge=1)
    """Completion budget per request."""


SMOKE_TOPICS = [
    "Healthcare",
    "Pets",
    "人工智能",
    "Travel and Adventure 🧭",
    "Laws, Rules / Regulations",
]


def smoke_requests(n: int, max_tokens: int) -> list[LLMRequest]:
    sampling = SamplingParams(temperature=0.7, max_tokens=max_tokens)
    requests = []
    for i in range(n):
        topic = SMOKE_TOPICS[i % len(SMOKE_TOPICS)]
        structured = i % 2 == 0
        ask = "Reply as JSON with keys topic and answer." if structured else "Reply in prose."
        requests.append(
            LLMRequest.chat(
                [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": f"Give one useful fact about {topic}. {ask}"},
                ],
                sampling,
                schema=SmokeAnswer if structured else None,
                sample_index=i,
            )
        )
    return requests


@dg.asset(kinds={"vllm"}, group_name="engine", pool=GPU_POOL)
def engine_smoke_test(
    context: dg.AssetExecutionContext, config: EngineSmokeConfig, llm: LLMResource
) -> dg.MaterializeResult:
    """A small batch through the LLM resource; metadata shows tokens, cache use and parsing."""
    requests = smoke_requests(config.requests, config.max_tokens)

    def progress(done: int, total: int, stats: GenerationStats) -> None:
        context.log.info(f"engine_smoke_test: {done}/{total} requests generated")

    result = llm.generate(requests, progress=progress)
    model, engine, version = llm.engine_info()
    rows = [
        f"| {i} | {c.finish_reason} | {c.parse_error or ('ok' if c.parsed else '-')} | "
        f"{c.text[:60].replace('|', '/').replace(chr(10), ' ')!s} |"
        for i, c in enumerate(result.completions[:5])
    ]
    preview = "| # | finish | parse | text |\n|---|---|---|---|\n" + "\n".join(rows)
    return dg.MaterializeResult(
        metadata={
            **generation_metadata(result.stats),
            "model": model,
            "engine": f"{engine} {version}",
            "preview": dg.MetadataValue.md(preview),
        }
    )
