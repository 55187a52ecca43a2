"""augcon/scorer_triplets and augcon/query_scorer: the scorer's training data from every
materialized chunk, and the scorer trained on it (unpartitioned: one scorer serves every shard)."""

from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
import polars as pl
from pydantic import BaseModel, Field

from condor_dagster.core.drop_reasons import drop_metadata
from condor_dagster.core.language import prompt_language
from condor_dagster.core.llm import SamplingParams
from condor_dagster.core.paths import data_dir
from condor_dagster.core.prompts import code_version, prompts_sha
from condor_dagster.core.rows import content_id, rows_to_frame
from condor_dagster.methods.augcon.partitions import GROUP, key
from condor_dagster.methods.augcon.records import AugconOrigin
from condor_dagster.methods.augcon.scorer import ScorerSettings, Triplet
from condor_dagster.methods.augcon.tree_assets import examples_by_language
from condor_dagster.methods.augcon.triplets import (
    QUESTION_PROMPT,
    QUESTION_TEMPERATURE,
    VAGUE_PROMPT,
    TripletRow,
    triplet_jobs,
    triplet_rows,
    usable_triplets,
)
from condor_dagster.resources.llm import LLMResource
from condor_dagster.resources.query_scorer import QueryScorerResource
from condor_dagster.stages.metadata import frame_metadata, generation_metadata
from condor_dagster.stages.partitions import ALL_PARTITIONS, GPU_POOL, run_started_at


class ScorerTripletsConfig(dg.Config):
    """How the scorer's training triplets are generated."""

    per_type: int = Field(default=500, ge=1)
    """Triplets per degradation and prompt language at most (AugCon: 500 per type)."""
    temperature: float = Field(default=QUESTION_TEMPERATURE, ge=0.0)
    """Sampling temperature of both questions (AugCon: 0.85)."""
    max_tokens: int = Field(default=128, ge=16)
    """Completion budget of one question."""
    structured_output: bool = True
    """JSON schema output; False reads the first line of free text."""
    draws: int = Field(default=1, ge=1, le=20)
    """Triplets per chosen chunk and degradation, each draw with its own seeds: a small corpus
    (a demo, a first shard) needs several to give the scorer enough pairs."""
    seed: int = 0
    """Chooses the chunks and seeds the requests (draw k uses seed + k)."""
    examples_path: str | None = None
    """JSONL of {context, question, answer} examples; None uses the shipped ones."""


def _triplets_version() -> str:
    shas = [prompts_sha(QUESTION_PROMPT), prompts_sha(VAGUE_PROMPT)]
    return code_version(shas, ScorerTripletsConfig().model_dump())


@dg.asset(
    key=key("scorer_triplets"),
    group_name=GROUP,
    ins={"chunks": dg.AssetIn(key=key("chunks"), metadata=ALL_PARTITIONS)},
    kinds={"vllm", "parquet"},
    code_version=_triplets_version(),
    pool=GPU_POOL,
    description="(context, question from the full prompt, question from a degraded prompt).",
)
def scorer_triplets(
    context: dg.AssetExecutionContext,
    config: ScorerTripletsConfig,
    llm: LLMResource,
    chunks: dict[str, pl.DataFrame],
) -> dg.Output[pl.DataFrame]:
    """Triplets for the three degradations over every materialized chunk, by language."""
    by_language: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for shard in sorted(chunks):
        for row in chunks[shard].iter_rows(named=True):
            by_language[prompt_language(row["language"])].append(row)
    if not by_language:
        raise ValueError("augcon/chunks has no rows: materialize augcon/chunks for some shards")
    examples = examples_by_language(config.examples_path)
    sampling = SamplingParams(temperature=config.temperature, max_tokens=config.max_tokens)
    jobs = [
        job
        for draw in range(config.draws)
        for lang in sorted(by_language)
        for job in triplet_jobs(
            by_language[lang],
            examples[lang],
            per_type=config.per_type,
            sampling=sampling,
            structured=config.structured_output,
            seed=config.seed + draw,
        )
    ]
    context.log.info(f"scorer_triplets: {len(jobs)} triplets, {2 * len(jobs)} requests")
    result = llm.generate(
        [job.positive_request for job in jobs] + [job.negative_request for job in jobs]
    )
    half = len(jobs)
    rows = triplet_rows(
        jobs,
        result.completions[:half],
        result.completions[half:],
        structured=config.structured_output,
        run_id=context.run.run_id,
        now=run_started_at(context),
    )
    # Two draws that wrote the same pair of questions are one triplet (the ids are equal).
    first: dict[str, TripletRow] = {}
    for triplet in rows:
        first.setdefault(triplet.id, triplet)
    rows = list(first.values())
    frame = rows_to_frame(rows, TripletRow, origin=AugconOrigin)
    usable = [r for r in rows if r.drop_reason is None]
    return dg.Output(
        frame,
        metadata={
            **frame_metadata(frame, ["degradation", "drop_reason", "positive", "negative"]),
            **generation_metadata([result.stats]),
            **drop_metadata(r.drop_reason for r in rows),
            "usable_by_degradation": dict(sorted(Counter(r.degradation for r in usable).items())),
            "chunks_by_language": {k: len(v) for k, v in sorted(by_language.items())},
        },
    )


class QueryScorerConfig(dg.Config):
    """How the query scorer is trained (methods/augcon/scorer.py ScorerSettings)."""

    encoder: str | None = None
    """Hugging Face encoder folder; None fine-tunes the bundled all-MiniLM-L6-v2."""
    loss: str = "bradley_terry"
    """bradley_terry (the paper's) or mean_difference (the seed code's)."""
    epochs: int = Field(default=3, ge=1)
    """Passes over the training triplets."""
    learning_rate: float = Field(default=3e-5, gt=0.0)
    """Encoder learning rate."""
    batch_size: int = Field(default=16, ge=1)
    """Triplets per optimizer step."""
    max_length: int = Field(default=256, ge=32)
    """Tokens per (context, question) input."""
    heldout_fraction: float = Field(default=0.2, gt=0.0, le=0.5)
    """Share of contexts held out to measure pairwise accuracy."""
    seed: int = 0
    """Seeds the split, the head and the batch order."""
    min_heldout_accuracy: float = Field(default=0.6, ge=0.0, le=1.0)
    """The better_than_chance check's bound on held-out pairwise accuracy."""

    def settings(self) -> ScorerSettings:
        return ScorerSettings.model_validate(self.model_dump(exclude={"min_heldout_accuracy"}))


class QueryScorerRow(BaseModel):
    """augcon/query_scorer: the trained scorer's folder and its training record."""

    model_dir: str
    """The folder `QueryScorerResource.score` loads."""
    encoder: str
    loss: str
    train_triplets: int
    heldout_triplets: int
    heldout_accuracy: float
    heldout_accuracy_before: float
    loss_per_epoch: list[float]
    train_seconds: float
    record: str
    """The whole TrainingRecord as JSON."""


def scorer_folder(triplets: list[Triplet], settings: ScorerSettings) -> str:
    """Content-addressed: the same data and settings name the same folder."""
    digest = content_id("qs", [t.model_dump() for t in triplets], settings.model_dump())
    return str(data_dir() / "models" / "query_scorer" / digest)


@dg.asset(
    key=key("query_scorer"),
    group_name=GROUP,
    ins={"triplets": dg.AssetIn(key=key("scorer_triplets"))},
    kinds={"pytorch", "parquet"},
    code_version=code_version(["query-scorer-v1"], QueryScorerConfig().model_dump()),
    check_specs=[dg.AssetCheckSpec("better_than_chance", asset=key("query_scorer"))],
    description="A value head on an encoder, trained with the Bradley-Terry loss.",
)
def query_scorer(
    context: dg.AssetExecutionContext,
    config: QueryScorerConfig,
    query_scorer: QueryScorerResource,
    triplets: pl.DataFrame,
) -> Iterator[dg.Output[pl.DataFrame] | dg.AssetCheckResult]:
    """Trains on the usable triplets; the row names the saved folder."""
    usable = usable_triplets([TripletRow.model_validate(r) for r in triplets.iter_rows(named=True)])
    settings = config.settings()
    record = query_scorer.train(usable, settings=settings, out_dir=scorer_folder(usable, settings))
    row = QueryScorerRow(
        **record.model_dump(
            include={
                "model_dir",
                "encoder",
                "loss",
                "train_triplets",
                "heldout_triplets",
                "heldout_accuracy",
                "heldout_accuracy_before",
                "loss_per_epoch",
                "train_seconds",
            }
        ),
        record=record.model_dump_json(),
    )
    yield dg.Output(
        rows_to_frame([row], QueryScorerRow),
        metadata={
            "model_dir": dg.MetadataValue.path(record.model_dir),
            "heldout_accuracy": record.heldout_accuracy,
            "heldout_accuracy_before": record.heldout_accuracy_before,
            "heldout_accuracy_by_degradation": record.heldout_accuracy_by_degradation,
            "loss_per_epoch": record.loss_per_epoch,
            "train_triplets": record.train_triplets,
            "heldout_triplets": record.heldout_triplets,
            "triplets_by_degradation": record.triplets_by_degradation,
            "train_seconds": record.train_seconds,
            "seconds_per_1000_triplets": round(
                1000 * record.train_seconds / max(record.train_triplets, 1), 2
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name="better_than_chance",
        passed=record.heldout_accuracy >= config.min_heldout_accuracy,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "heldout_accuracy": record.heldout_accuracy,
            "bound": config.min_heldout_accuracy,
        },
    )


def scorer_dir(scorer: pl.DataFrame | Mapping[str, Any]) -> str:
    """The model folder an augcon/query_scorer output names."""
    frame = scorer if isinstance(scorer, pl.DataFrame) else pl.DataFrame(scorer)
    if frame.height != 1:
        raise ValueError(f"augcon/query_scorer must hold one row, holds {frame.height}")
    return str(frame["model_dir"][0])
