"""The shared candidates stage: every method ends in `<method>/sft_candidates`, its samples
in the one long format of core/candidates.py, which sft_dataset takes from every method."""

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl

from condor_dagster.core.candidates import check_candidates
from condor_dagster.core.prompts import code_version
from condor_dagster.core.rows import drop_metadata
from condor_dagster.stages.metadata import partitioned_frame_metadata
from condor_dagster.stages.partitions import (
    inputs_by_partition,
    output_for_partitions,
    partitioned_stage,
)

# (the partition's input frames by input name) -> the partition's candidates.
BuildCandidates = Callable[..., pl.DataFrame]


def candidates_stage(
    *,
    method: str,
    key_prefix: Sequence[str],
    partitions_def: dg.PartitionsDefinition,
    group: str,
    ins: Mapping[str, dg.AssetKey],
    build: BuildCandidates,
    version: str = "candidates-v1",
    name: str = "sft_candidates",
) -> dg.AssetsDefinition:
    """`<key_prefix>/sft_candidates` over `ins` (input name -> upstream key): `build` gets one
    partition's input frames as keyword arguments and returns its candidates."""

    @partitioned_stage(
        name=name,
        key_prefix=key_prefix,
        partitions_def=partitions_def,
        group=group,
        ins=ins,
        kinds={"parquet"},
        code_version=code_version([version], {"method": method}),
        checks=["matches_contract"],
    )
    def candidates(
        context: dg.AssetExecutionContext, **inputs: Any
    ) -> Iterator[dg.Output[Any] | dg.AssetCheckResult]:
        """One row per (question, variant), the method's answers in the shared long format."""
        by_input = {name: inputs_by_partition(context, value) for name, value in inputs.items()}
        frames = {
            key: build(**{name: values[key] for name, values in by_input.items()})
            for key in context.partition_keys
        }
        problems = {k: p for k, f in frames.items() if (p := check_candidates(f, method))}
        variants = Counter(v for f in frames.values() for v in f["variant"].to_list())
        yield dg.Output(
            output_for_partitions(context, frames),
            metadata={
                **partitioned_frame_metadata(frames, ["variant", "drop_reason", "answer"]),
                **drop_metadata(r for f in frames.values() for r in f["drop_reason"].to_list()),
                "variants": dict(variants),
            },
        )
        yield dg.AssetCheckResult(
            check_name="matches_contract",
            passed=not problems,
            metadata={"problems": problems},
        )

    return candidates
