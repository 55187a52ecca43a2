"""What the Dagster UI does, through the webserver's GraphQL API: launch a job, turn a sensor
on, launch a partition backfill, read partition statuses and run records.

Every wait is bounded and, on timeout, fails with what it saw last and the daemon and
webserver log tails, so a CI failure is readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from condor_dagster.serving.stack import ServeStack

T = TypeVar("T")

TAG_ASSETS = [
    "raw_questions",
    "deduplicated_questions",
    "draft_answers",
    "refined_answers",
    "refine_quality",
    "sft_candidates",
]
SHARED_ASSETS = {"sft_dataset", "engine_smoke_test"}


def asset_path(asset: str) -> list[str]:
    """The key path of a Condor asset name ("raw_questions" -> condor/raw_questions), of a
    shared asset (sft_dataset) or of a key written with '/'."""
    if "/" in asset:
        return asset.split("/")
    return [asset] if asset in SHARED_ASSETS else ["condor", asset]


# Small generations: the tiny model's text is noise, the machinery is what is checked.
SMALL_TAG_RUN_CONFIG = {
    "ops": {
        "condor__raw_questions": {"config": {"max_tokens": 96}},
        "condor__draft_answers": {"config": {"max_tokens": 24}},
        "condor__refined_answers": {"config": {"critique_max_tokens": 48, "max_tokens": 24}},
        "condor__refine_quality": {"config": {"max_tokens": 32}},
    }
}
RUN_DONE = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


@dataclass
class Backfill:
    id: str
    status: str
    runs: list[dict[str, Any]]


class DagsterUI:
    """A GraphQL client of one ServeStack."""

    def __init__(self, stack: ServeStack):
        self.stack = stack
        location = self.q(
            "query { workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { ... on RepositoryLocation { repositories { name } } } } } } }"
        )["workspaceOrError"]["locationEntries"][0]
        self.location = location["name"]
        self.repository = location["locationOrLoadError"]["repositories"][0]["name"]

    def q(self, query: str, **variables: Any) -> dict[str, Any]:
        return self.stack.graphql(query, variables)

    # ---- waiting ------------------------------------------------------------------------------
    def wait_for(self, what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
        """probe() until it returns something truthy; fail after timeout_s with the logs."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            self.stack.check_alive()
            last = probe()
            if last:
                return last
            time.sleep(1)
        raise AssertionError(
            f"timed out after {timeout_s:.0f}s waiting for {what} (last seen: {last!r})\n"
            f"{self.stack.log_tails(60)}"
        )

    # ---- jobs and runs -----------------------------------------------------------------------
    def launch_job(self, job: str, run_config: Mapping[str, Any]) -> str:
        """launchRun, as the Launchpad's Launch button; returns the run id (queued)."""
        answer = self.q(
            """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
                __typename ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message } ... on RunConfigValidationInvalid {
                errors { message } } } }""",
            params={
                "selector": {
                    "repositoryLocationName": self.location,
                    "repositoryName": self.repository,
                    "jobName": job,
                },
                "runConfigData": dict(run_config),
            },
        )["launchRun"]
        assert answer["__typename"] == "LaunchRunSuccess", answer
        return str(answer["run"]["runId"])

    def run_status(self, run_id: str) -> str:
        run = self.q(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", id=run_id
        )["runOrError"]
        return str(run["status"])

    def wait_run(self, run_id: str, timeout_s: float) -> str:
        def done() -> str | None:
            status = self.run_status(run_id)
            return status if status in RUN_DONE else None

        return self.wait_for(f"run {run_id} to finish", done, timeout_s)

    # ---- sensors and partitions --------------------------------------------------------------
    def start_sensor(self, name: str) -> None:
        """startSensor, as the sensor's toggle in the UI."""
        answer = self.q(
            """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
                __typename ... on Sensor { sensorState { status } }
                ... on PythonError { message } } }""",
            s={
                "repositoryLocationName": self.location,
                "repositoryName": self.repository,
                "sensorName": name,
            },
        )["startSensor"]
        assert answer["__typename"] == "Sensor", answer
        assert answer["sensorState"]["status"] == "RUNNING", answer

    def partition_keys(self, asset: str) -> list[str]:
        node = self.q(
            "query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) { "
            "... on AssetNode { partitionKeys } } }",
            k={"path": asset_path(asset)},
        )["assetNodeOrError"]
        return list(node["partitionKeys"])

    def wait_partitions(self, keys: Iterable[str], timeout_s: float) -> list[str]:
        wanted = set(keys)

        def present() -> list[str] | None:
            known = self.partition_keys(TAG_ASSETS[0])
            return known if wanted <= set(known) else None

        return self.wait_for(f"the sensor to add partitions {sorted(wanted)}", present, timeout_s)

    def partition_statuses(self, assets: Iterable[str]) -> dict[str, dict[str, list[str]]]:
        """{asset: {materialized|failed|unmaterialized|materializing: [keys]}}, as the
        partitions bar of each asset shows them."""
        nodes = self.q(
            """query($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) {
                assetKey { path } assetPartitionStatuses { __typename
                ... on DefaultPartitionStatuses { materializedPartitions failedPartitions
                unmaterializedPartitions materializingPartitions } } } }""",
            keys=[{"path": asset_path(a)} for a in assets],
        )["assetNodes"]
        out = {}
        for node in nodes:
            statuses = node["assetPartitionStatuses"]
            out[node["assetKey"]["path"][-1]] = {
                k.removesuffix("Partitions"): list(v)
                for k, v in statuses.items()
                if k != "__typename"
            }
        return out

    def missing_partitions(self, assets: list[str]) -> list[str]:
        """The launch dialog's "missing" option: partitions not materialized (never, or the
        last attempt failed) for any of the selected assets, in partition order."""
        statuses = self.partition_statuses(assets)
        missing = {
            key
            for by_status in statuses.values()
            for key in by_status["unmaterialized"] + by_status["failed"]
        }
        return [k for k in self.partition_keys(assets[0]) if k in missing]

    def pools(self, assets: Iterable[str]) -> dict[str, list[str]]:
        nodes = self.q(
            "query($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) { "
            "assetKey { path } pools } }",
            keys=[{"path": asset_path(a)} for a in assets],
        )["assetNodes"]
        return {n["assetKey"]["path"][-1]: list(n["pools"]) for n in nodes}

    def pool_limits(self) -> dict[str, int]:
        limits = self.q("query { instance { concurrencyLimits { concurrencyKey slotCount } } }")
        return {
            c["concurrencyKey"]: int(c["slotCount"])
            for c in limits["instance"]["concurrencyLimits"]
        }

    # ---- backfills ---------------------------------------------------------------------------
    def launch_backfill(
        self,
        assets: list[str],
        partitions: list[str],
        run_config: Mapping[str, Any] | None = None,
    ) -> str:
        """launchPartitionBackfill over an asset selection, what the UI's Materialize button
        sends for partitioned assets; returns the backfill id."""
        params: dict[str, Any] = {
            "assetSelection": [{"path": asset_path(a)} for a in assets],
            "partitionNames": partitions,
        }
        if run_config is not None:
            params["runConfigData"] = dict(run_config)
        answer = self.q(
            """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
                __typename ... on LaunchBackfillSuccess { backfillId }
                ... on PythonError { message } } }""",
            p=params,
        )["launchPartitionBackfill"]
        assert answer["__typename"] == "LaunchBackfillSuccess", answer
        return str(answer["backfillId"])

    def backfill(self, backfill_id: str) -> Backfill:
        data = self.q(
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                ... on PartitionBackfill { id status runs { runId status tags { key value } } }
                ... on PythonError { message } } }""",
            id=backfill_id,
        )["partitionBackfillOrError"]
        assert "status" in data, data
        return Backfill(id=data["id"], status=data["status"], runs=list(data["runs"]))

    def wait_backfill(self, backfill_id: str, timeout_s: float) -> Backfill:
        def done() -> Backfill | None:
            found = self.backfill(backfill_id)
            return found if found.status in BACKFILL_DONE else None

        return self.wait_for(f"backfill {backfill_id} to complete", done, timeout_s)


def write_taxonomy(
    path: Path, children: list[str], custom: list[str] | None = None, root: str = "Healthcare"
) -> Path:
    """A seed file whose root already has its leaves: knowledge_tree (depth 2) asks the LLM
    nothing, so the tags are known in advance."""
    lines = ["version: 1", "roots:", f"  - name: {root}", f"    children: {children!r}"]
    if custom:
        lines.append(f"    custom: {custom!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


def tree_run_config(taxonomy: Path) -> dict[str, Any]:
    return {
        "ops": {"condor__knowledge_tree": {"config": {"taxonomy_path": str(taxonomy), "depth": 2}}}
    }
