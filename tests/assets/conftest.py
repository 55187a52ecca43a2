"""Helpers for materializing the Condor assets on a fresh instance and data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from condor_dagster.methods.condor.assets import CONDOR_ASSETS, TAG_ASSETS
from condor_dagster.methods.condor.sensors import sync_tags
from condor_dagster.methods.corpus.resource import CorpusResource
from condor_dagster.methods.dataset import DATASET_ASSETS
from condor_dagster.resources.embeddings import SentenceTransformerEmbeddings
from condor_dagster.resources.llm import LLMResource
from condor_dagster.resources.parquet_io import ParquetIOManager
from condor_dagster.resources.query_scorer import QueryScorerResource
from condor_dagster.resources.scripted_llm import ScriptedLLMResource, ScriptRule

# Scripted text: two children per expansion plus planted bad names, three distinct questions,
# and a fixed answer. {seed} makes each request's text its own.
CRITIQUE_WITH_WEAKNESS = ScriptRule(
    pattern="Critique the answer",
    response='{"strengths": ["clear"], "weaknesses": ["no example"], '
    '"suggestions": ["add an example"]}',
)
REWRITE = ScriptRule(pattern="Here is feedback on your answer", response="Improved {seed}.")
SCRIPTED_RULES = [
    CRITIQUE_WITH_WEAKNESS,
    REWRITE,
    ScriptRule(
        pattern="sub-topics",
        response='{"names": ["Alpha {seed}", "Beta {seed}", "alpha {seed}", "123", ""]}',
    ),
    ScriptRule(
        pattern="three questions",
        response='{"easy": "Which tool suits task {seed} best?", '
        '"medium": "How would you plan project {seed} with a small budget?", '
        '"hard": "Why does approach {seed} fail under heavy load, and what would fix it?"}',
    ),
]


ALL_ASSETS = DATASET_ASSETS


def asset_path(asset: str) -> list[str]:
    """The key path of a Condor asset name ("draft_answers") or of a shared one."""
    if "/" in asset:
        return asset.split("/")
    return [asset] if asset == "sft_dataset" else ["condor", asset]


def condor_op(asset: str) -> str:
    """The op name of a Condor asset (its key path joined by __), for run config."""
    return f"condor__{asset}"


# The smallest tree: one root, one sub-domain, one leaf tag.
ONE_TAG = {"max_roots": 1, "subdomains_per_root": 1, "leaves_per_subdomain": 1}


def scripted_llm(cache: Path, **extra: Any) -> ScriptedLLMResource:
    return ScriptedLLMResource(
        rules=extra.pop("rules", SCRIPTED_RULES),
        default_response="A scripted answer.",
        cache_path=str(cache),
        **extra,
    )


@dataclass
class CondorWorld:
    """One instance, data directory and resource set for a test."""

    instance: dg.DagsterInstance
    assets_dir: Path
    resources: dict[str, Any]

    def tree_config(self, **overrides: Any) -> dict[str, Any]:
        config = {"max_roots": 2, "subdomains_per_root": 2, "leaves_per_subdomain": 2}
        config.update(overrides)
        return {"ops": {"condor__knowledge_tree": {"config": config}}}

    def materialize_tree(self, **config: Any) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [CONDOR_ASSETS[0]],
            resources=self.resources,
            instance=self.instance,
            run_config=self.tree_config(**config),
        )

    def sync_tags(self) -> dg.SensorResult:
        """Evaluate the sensor and apply its partition requests, as the daemon would."""
        return sync_tags(self.instance, self.resources["io_manager"])

    def materialize_tags(
        self,
        keys: list[str],
        *,
        raise_on_error: bool = True,
        llm: LLMResource | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> dg.ExecuteInProcessResult:
        """One run over a range of tag partitions, like one backfill run."""
        resources = dict(self.resources)
        if llm is not None:
            resources["llm"] = llm
        return dg.materialize(
            ALL_ASSETS,
            selection=TAG_ASSETS,
            resources=resources,
            instance=self.instance,
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            },
            raise_on_error=raise_on_error,
            run_config=run_config,
        )

    def read(self, asset: str, key: str | None = None) -> pl.DataFrame:
        """A stored frame: `asset` is a Condor asset name or a key path (sft_dataset)."""
        return self.resources["io_manager"].store().read(asset_path(asset), key)

    def tags(self) -> list[str]:
        return list(self.instance.get_dynamic_partitions("tags"))


def make_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llm: LLMResource) -> CondorWorld:
    assets_dir = tmp_path / "assets"
    monkeypatch.setenv("CONDOR_ASSETS_DIR", str(assets_dir))
    return CondorWorld(
        instance=dg.DagsterInstance.ephemeral(),
        assets_dir=assets_dir,
        resources={
            "llm": llm,
            "embeddings": SentenceTransformerEmbeddings(),
            "io_manager": ParquetIOManager(base_dir=str(assets_dir)),
            # sft_dataset's graph holds every method's assets, so their resources too.
            "corpus": CorpusResource(path=str(assets_dir.parent / "corpus")),
            "query_scorer": QueryScorerResource(),
        },
    )


@pytest.fixture
def scripted_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CondorWorld:
    return make_world(tmp_path, monkeypatch, scripted_llm(tmp_path / "cache.sqlite3"))
