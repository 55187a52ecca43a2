"""CorpusResource: where the corpus lives and how its sources are read and sharded."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from condor_dagster.core.paths import condor_home
from condor_dagster.methods.corpus.records import DocumentRow
from condor_dagster.methods.corpus.shards import Discovery, discover, read_shard


class CorpusResource(dg.ConfigurableResource):
    """A folder (or one file) of documents: JSONL, Parquet, saved datasets, text, HTML."""

    path: str | None = Field(
        default=None,
        description="Corpus folder or single source file; default CONDOR_CORPUS_DIR, else "
        "<CONDOR_HOME>/corpus.",
    )
    text_field: str = Field(
        default="article",
        description="The JSON field / Parquet or dataset column that holds a document's text.",
    )
    docs_per_shard: int = Field(
        default=100,
        ge=1,
        description="Documents per shard (partition) of a JSONL, Parquet or dataset source.",
    )

    def root(self) -> Path:
        """The corpus root, resolved now (so a changed CONDOR_CORPUS_DIR is followed)."""
        configured = self.path or os.environ.get("CONDOR_CORPUS_DIR")
        return Path(configured).expanduser() if configured else condor_home() / "corpus"

    def discover(self) -> Discovery:
        """The shards the corpus holds now."""
        return discover(self.root(), docs_per_shard=self.docs_per_shard)

    def read(self, shard_key: str) -> list[DocumentRow]:
        """The documents of the shard `shard_key`, found in a fresh discovery."""
        shards = {shard.key: shard for shard in self.discover().shards}
        if shard_key not in shards:
            raise ValueError(
                f"corpus shard {shard_key!r} is not in {self.root()} any more: its file may have "
                "been removed or renamed (or docs_per_shard / the file's length changed); the "
                "corpus sensor reports such partitions and never deletes them"
            )
        return read_shard(self.root(), shards[shard_key], text_field=self.text_field)
