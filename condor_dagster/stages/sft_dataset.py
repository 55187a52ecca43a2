"""sft_dataset: every method's candidates -> cross-method dedup, shared filters, exports per
(method, variant) and mixed per variant, the card broken down by method."""

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.core.export import (
    concat_partitions,
    cross_partition_decisions,
    embedding_models,
    example_lines,
    export_files,
    flatten_origin,
    mixed_frame,
    provenance_lines,
    summary_lines,
    validate_export,
    variant_lines,
    with_keep_decisions,
    write_card,
)
from condor_dagster.core.paths import data_dir
from condor_dagster.stages.metadata import frame_metadata
from condor_dagster.stages.partitions import ALL_PARTITIONS, OPTIONAL

# (the method's decided candidates, its extra inputs) -> problems (empty: none).
OriginCheck = Callable[[pl.DataFrame, Mapping[str, Any]], dict[str, Any]]
# (the method's decided candidates, its extra inputs, export dir) -> (card lines, files).
CardSection = Callable[[pl.DataFrame, Mapping[str, Any], Path], tuple[list[str], dict[str, Path]]]


@dataclass(frozen=True)
class MethodExport:
    """What sft_dataset reads from one method and how it checks and describes its rows."""

    method: str
    candidates: dg.AssetKey
    """The method's sft_candidates asset (partitioned)."""
    embeddings: dg.AssetKey
    """Its dedup asset: kept rows carry the question embeddings (id, embedding)."""
    extra: Mapping[str, dg.AssetKey] = field(default_factory=dict)
    """Further inputs its origin check and card section use (name -> asset key)."""
    partitioned_extra: frozenset[str] = frozenset()
    """Names in `extra` that are partitioned (read as every materialized partition)."""
    origin_check: OriginCheck | None = None
    """Checks each row traces to its origin (a tag node, a corpus document)."""
    card_section: CardSection | None = None
    jsonl_fields: Sequence[str] = ()
    """Origin fields copied into the per-method JSONL records."""


class SftDatasetConfig(dg.Config):
    """Export settings."""

    similarity_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    """Cosine similarity at or above which questions of different partitions or methods are
    duplicates."""
    exact_search_max: int = Field(default=200_000, ge=1)
    """Above this many questions the cross-partition search uses an approximate (IVF) index."""
    export_dir: str | None = None
    """Where the exports go; default <CONDOR_DATA_DIR>/exports."""


def _input(method: str, name: str) -> str:
    return f"{method}__{name}"


def sft_dataset_stage(
    methods: Sequence[MethodExport], *, group: str = "export", name: str = "sft_dataset"
) -> dg.AssetsDefinition:
    """The unpartitioned dataset asset over every method in `methods`."""
    ins: dict[str, dg.AssetIn] = {}
    for m in methods:
        ins[_input(m.method, "candidates")] = dg.AssetIn(key=m.candidates, metadata=ALL_PARTITIONS)
        ins[_input(m.method, "embeddings")] = dg.AssetIn(key=m.embeddings, metadata=ALL_PARTITIONS)
        for extra, key in m.extra.items():
            # Optional: a method not materialized yet must not block the others' export.
            metadata = ALL_PARTITIONS if extra in m.partitioned_extra else OPTIONAL
            ins[_input(m.method, extra)] = dg.AssetIn(key=key, metadata=metadata)

    @dg.asset(
        name=name,
        group_name=group,
        kinds={"faiss", "parquet"},
        ins=ins,
        check_specs=[dg.AssetCheckSpec("export_ready", asset=name, blocking=True)],
    )
    def sft_dataset(
        context: dg.AssetExecutionContext, config: SftDatasetConfig, **inputs: Any
    ) -> Iterator[dg.Output[Any] | dg.AssetCheckResult]:
        """Every candidate of every method with its keep decision; exports each (method,
        variant) and each variant mixed over the methods as Parquet, messages JSONL and
        ShareGPT JSONL, plus a dataset card broken down by method. Methods or partitions not
        materialized yet are left out."""
        present = {}
        for m in methods:
            frame = concat_partitions(inputs.get(_input(m.method, "candidates")))
            if frame is not None:
                present[m.method] = (m, frame)
        if not present:
            raise dg.Failure(
                "no materialized sft_candidates partitions yet for any method "
                f"({', '.join(m.method for m in methods)}); materialize a method's assets first "
                "(make demo, or a backfill of its partitions)"
            )
        embeddings = {
            method: _stored_embeddings(inputs.get(_input(method, "embeddings")))
            for method in present
        }
        models = embedding_models(embeddings)
        questions = pl.concat([f.select("question_id", "question") for _, f in present.values()])
        decisions = cross_partition_decisions(
            questions,
            pl.concat(list(embeddings.values()), how="vertical_relaxed"),
            config.similarity_threshold,
            config.exact_search_max,
        )
        decided = {
            method: with_keep_decisions(frame, decisions) for method, (_, frame) in present.items()
        }
        samples = pl.concat([mixed_frame(f) for f in decided.values()]).collect()
        samples = samples.sort("method", "variant", "id")
        problems = validate_export(samples)
        for method, (m, _) in present.items():
            if m.origin_check is not None:
                extras = {k: inputs.get(_input(method, k)) for k in m.extra}
                for what, value in m.origin_check(decided[method], extras).items():
                    problems[f"{method}: {what}"] = value
        yield dg.AssetCheckResult(
            check_name="export_ready",
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"problems": problems, "samples": samples.height},
        )
        if problems:
            raise dg.Failure(f"sft_dataset failed its export check, nothing exported: {problems}")

        out = Path(config.export_dir) if config.export_dir else data_dir() / "exports"
        files: dict[str, str] = {}
        sections: list[str] = []
        for method, (m, _) in present.items():
            frame = decided[method]
            for variant in sorted(set(frame["variant"].to_list())):
                kept = flatten_origin(frame.filter(pl.col("kept") & (pl.col("variant") == variant)))
                written = export_files(
                    kept, out / method, f"sft_{variant}", extra=["variant", *m.jsonl_fields]
                )
                files.update({f"{method}_{variant}_{k}": str(p) for k, p in written.items()})
                sections += variant_lines(samples, method, variant)
            if m.card_section is not None:
                extras = {k: inputs.get(_input(method, k)) for k in m.extra}
                lines, pictures = m.card_section(frame, extras, out)
                sections += lines
                files.update({f"{method}_{k}": str(p) for k, p in pictures.items()})
        for variant in sorted(set(samples["variant"].to_list())):
            kept = samples.lazy().filter(pl.col("kept") & (pl.col("variant") == variant))
            written = export_files(kept, out, f"sft_{variant}", extra=["variant", "origin"])
            files.update({f"{variant}_{k}": str(p) for k, p in written.items()})
        card = out / "README.md"
        write_card(card, _card(samples, sections, models, config.similarity_threshold))
        files["card"] = str(card)
        context.log.info(f"sft_dataset: exports written to {out}")
        drops = {
            f"{method}/{variant}": dict(Counter(rows["drop_reason"].drop_nulls().to_list()))
            for (method, variant), rows in samples.group_by("method", "variant")
        }
        kept_counts = {
            f"{method}/{variant}": int(rows["kept"].sum())
            for (method, variant), rows in samples.group_by("method", "variant")
        }
        yield dg.Output(
            samples,
            metadata={
                **frame_metadata(samples, ["method", "variant", "kept", "drop_reason", "question"]),
                "samples": dict(sorted(kept_counts.items())),
                "kept": int(samples["kept"].sum()),
                "dropped_by_reason": json.dumps(dict(sorted(drops.items())), sort_keys=True),
                "methods": sorted(present),
                "files": files,
                "export_dir": str(out),
            },
        )

    return sft_dataset


def _stored_embeddings(frames: Mapping[str, Any] | None) -> pl.DataFrame:
    """(id, embedding, embedding_model) of every kept, embedded question of a method."""
    empty = pl.DataFrame(
        schema={"id": pl.String, "embedding": pl.List(pl.Float32), "embedding_model": pl.String}
    )
    parts = [
        f.lazy()
        .filter(pl.col("kept") & pl.col("embedding").is_not_null())
        .select("id", "embedding", "embedding_model")
        for f in (frames or {}).values()
        if f is not None
    ]
    return pl.concat([empty.lazy(), *parts], how="vertical_relaxed").collect()


def _card(samples: pl.DataFrame, sections: list[str], models: list[str], threshold: float) -> str:
    lines = [
        "# SFT dataset",
        "",
        "Synthesized with condor-dagster. Each method's samples come in named variants (Condor:",
        "`refine` holds refined answers, `void` the draft answers of the same questions); the",
        "files per method are under `<method>/`, the files at the top mix every method.",
        "",
        *summary_lines(samples),
        "## Per method and variant",
        "",
        *sections,
        *provenance_lines(samples),
        f"- cross-partition dedup: {samples['dedup_index'].drop_nulls().head(1).to_list()} "
        f"index, similarity threshold {threshold}, embedding model {models}",
        "",
        *example_lines(samples),
    ]
    return "\n".join(lines)
