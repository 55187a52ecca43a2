"""corpus_sensor: keeps the "corpus_shards" partitions in step with the corpus folder.

Each evaluation discovers the shards, adds the keys the instance does not have yet, and, when
`CONDOR_SENSOR_REQUESTS_RUNS` is on (default), requests one run per shard this sensor has not
seen (its cursor): AugCon and Kun each build a sensor for their own shard assets over the same
partitions, so a shard another method's sensor already added still gets this method's run.
Shards whose file left the folder are reported, never deleted; files changed since the cursor
recorded their fingerprint are reported (their shards are not re-requested: that is the user's
call, a backfill of those partitions).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from condor_dagster.methods.corpus.partitions import corpus_shards
from condor_dagster.methods.corpus.resource import CorpusResource
from condor_dagster.methods.corpus.shards import Shard

PARTITIONS = corpus_shards.name or "corpus_shards"
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusChanges:
    """What an evaluation found, relative to the instance's partitions and the cursor."""

    to_add: list[str] = field(default_factory=list)
    """Shard keys not yet in the corpus_shards partitions."""
    to_request: list[Shard] = field(default_factory=list)
    """Shards this sensor has not seen (not in its cursor)."""
    removed: list[str] = field(default_factory=list)
    """Partition keys whose shard is no longer in the folder (kept)."""
    changed: list[str] = field(default_factory=list)
    """Sources whose fingerprint differs from the one in the cursor."""

    def summary(self) -> str:
        return (
            f"{len(self.to_add)} new partitions, {len(self.to_request)} shards to request, "
            f"{len(self.removed)} removed (kept): {_few(self.removed)}, "
            f"{len(self.changed)} changed files: {_few(self.changed)}"
        )


def corpus_changes(
    shards: Sequence[Shard], *, existing: Sequence[str], seen: Mapping[str, str]
) -> CorpusChanges:
    """Compare the discovered `shards` with the partitions that `existing` names and the
    cursor's `seen` {key: fingerprint}."""
    known = set(existing)
    current = {shard.key for shard in shards}
    changed = sorted({s.source for s in shards if s.key in seen and seen[s.key] != s.fingerprint})
    return CorpusChanges(
        to_add=[s.key for s in shards if s.key not in known],
        to_request=[s for s in shards if s.key not in seen],
        removed=[k for k in existing if k not in current],
        changed=changed,
    )


def read_cursor(cursor: str | None) -> dict[str, str]:
    """The {shard key: fingerprint} a cursor holds ({} for a sensor's first evaluation)."""
    if not cursor:
        return {}
    value = json.loads(cursor)
    if not isinstance(value, dict):
        raise ValueError(f"corpus sensor cursor is not a JSON object: {cursor[:200]!r}")
    return {str(k): str(v) for k, v in value.items()}


def corpus_sensor(*, name: str, asset_selection: Sequence[dg.AssetKey]) -> dg.SensorDefinition:
    """A sensor that adds new corpus shards as partitions and requests `asset_selection` for
    each shard it has not seen."""
    selection = list(asset_selection)

    @dg.sensor(
        name=name,
        # CONDOR_CORPUS_SENSOR_INTERVAL_S: seconds between evaluations (tests use a few).
        minimum_interval_seconds=int(os.environ.get("CONDOR_CORPUS_SENSOR_INTERVAL_S", "30")),
        asset_selection=selection,
        description="Adds new corpus shards as partitions and requests a run for each.",
    )
    def sensor(
        context: dg.SensorEvaluationContext, corpus: dg.ResourceParam[CorpusResource]
    ) -> dg.SensorResult:
        shards = corpus.discover().shards
        existing = list(context.instance.get_dynamic_partitions(PARTITIONS))
        changes = corpus_changes(shards, existing=existing, seen=read_cursor(context.cursor))
        if changes.removed:
            # Their files and history stay: deleting data is the user's decision.
            context.log.warning(
                f"{len(changes.removed)} corpus_shards partitions are no longer in "
                f"{corpus.root()} and were kept: {_few(changes.removed)}"
            )
        if changes.changed:
            context.log.warning(
                f"{len(changes.changed)} corpus files changed since their shards were "
                f"requested (backfill their partitions to re-read them): {_few(changes.changed)}"
            )
        runs = []
        if os.environ.get("CONDOR_SENSOR_REQUESTS_RUNS", "1") != "0":
            runs = [
                dg.RunRequest(
                    run_key=f"corpus:{shard.key}:{shard.fingerprint}",
                    partition_key=shard.key,
                    asset_selection=selection,
                )
                for shard in changes.to_request
            ]
        context.log.info(f"{changes.summary()}; requesting {len(runs)} runs")
        cursor = json.dumps({s.key: s.fingerprint for s in shards}, sort_keys=True)
        return dg.SensorResult(
            run_requests=runs,
            # A result with runs cannot carry a skip reason; without, it says what was found.
            skip_reason=None if runs else f"no shards to request: {changes.summary()}",
            cursor=cursor,
            dynamic_partitions_requests=(
                [corpus_shards.build_add_request(changes.to_add)] if changes.to_add else []
            ),
        )

    return sensor


def sync_corpus(
    instance: dg.DagsterInstance,
    corpus: CorpusResource,
    sensor: dg.SensorDefinition,
    *,
    cursor: str | None = None,
) -> dg.SensorResult:
    """Evaluate `sensor` once (from `cursor`, a previous result's) and apply its partition
    requests, as the daemon would (for `condor demo` and tests, which run without a daemon);
    its run requests are not launched. Its log (removed and changed shards) is also sent to
    this module's logger: without a daemon, nothing else keeps it."""
    context = dg.build_sensor_context(
        instance=instance, resources={"corpus": corpus}, cursor=cursor
    )
    # A sensor context's logger has no parent, so its records reach no application handler.
    context.log.addHandler(_Forward())
    result = sensor(context)
    if not isinstance(result, dg.SensorResult):
        raise RuntimeError(f"{sensor.name} returned {result!r}, not a SensorResult")
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(PARTITIONS, list(request.partition_keys))
    return result


class _Forward(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        LOG.log(record.levelno, record.getMessage())


def _few(items: Sequence[str], limit: int = 20) -> str:
    return f"{list(items[:limit])}{' ...' if len(items) > limit else ''}"
