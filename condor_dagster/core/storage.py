"""The one owner of the stage outputs' path layout: `AssetStore`, over a local folder or any
fsspec URL (s3://bucket/prefix, memory://...). The IO manager writes and reads through it, and
so do the sensors, `condor trace` and the export, so a custom base_dir works everywhere.

Layout under the base:

    <asset/key/path>.parquet                    unpartitioned asset
    <asset/key/path>/<partition_key>.parquet    one file per partition

Local writes go to a hidden temporary sibling, are fsynced, then `os.replace`d onto the final
name: a killed writer never leaves a half-written file, and readers skip hidden names. Other
filesystems get the finished bytes in one `write_bytes` (an object store publishes an object
only when its upload completes).

No Dagster import here: the CLI and tools read the store without loading Dagster.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from upath import UPath

from condor_dagster.core.paths import data_dir
from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN

__all__ = [
    "EXTENSION",
    "AssetKeyLike",
    "AssetStore",
    "check_partition_key",
    "default_assets_dir",
    "key_parts",
    "store_from_env",
]

EXTENSION = ".parquet"
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "statistics": True}
_LOCAL_PROTOCOLS = ("", "file", "local")
KEY_PART_PATTERN = re.compile(r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
"""What each part of an asset key must match to be a folder or file name: no '/', no leading
'.' or '-', never '..'."""

AssetKeyLike = str | Sequence[str]
"""An asset key as its path parts (["condor", "raw_questions"]) or '/'-joined
("condor/raw_questions")."""


def check_partition_key(partition_key: str, asset: str = "") -> str:
    """Return `partition_key` if it is a safe file name, else raise ValueError naming it."""
    # The tag-id rule of core.tag_ids is the one rule for keys: it also keeps them file-safe.
    if not isinstance(partition_key, str) or not PARTITION_KEY_PATTERN.match(partition_key):
        where = f" of asset {asset}" if asset else ""
        raise ValueError(
            f"partition key {partition_key!r}{where} cannot be stored as a file: keys must match "
            f"{PARTITION_KEY_PATTERN.pattern} (lowercase letters, digits, '.', '_', '-'; at most "
            "64 characters, starting with a letter or digit, no '..'); tag partition keys come "
            "from condor_dagster.core.tag_ids.node_id(path), never from raw tag names"
        )
    return partition_key


def key_parts(key: AssetKeyLike) -> list[str]:
    """An asset key as its path parts, each checked to be a safe file name, so that a str key
    and the same key as a list name the same file."""
    parts = key.split("/") if isinstance(key, str) else list(key)
    bad = [p for p in parts if not isinstance(p, str) or not KEY_PART_PATTERN.match(p)]
    if not parts or bad:
        escapes = any(isinstance(p, str) and ".." in p for p in bad)
        reason = "'..' would lead outside the IO manager base; " if escapes else ""
        raise ValueError(
            f"asset key {key!r} cannot be stored: {reason}each part must match "
            f"{KEY_PART_PATTERN.pattern} (letters, digits, '_', '.', '-'; not starting with '.' "
            f"or '-'; no '..'), offending parts {bad or parts}"
        )
    return parts


def default_assets_dir() -> str:
    """CONDOR_ASSETS_DIR if set, else <CONDOR_DATA_DIR>/assets (read now, so a changed
    environment is followed)."""
    return os.environ.get("CONDOR_ASSETS_DIR") or str(data_dir() / "assets")


def store_from_env(base_dir: str | None = None) -> AssetStore:
    """The store at `base_dir`, default `default_assets_dir()`."""
    return AssetStore(base_dir or default_assets_dir())


class AssetStore:
    """Parquet files of every (asset, partition) under one base folder or URL."""

    def __init__(self, base_dir: str) -> None:
        base = UPath(base_dir)
        self._is_local = base.protocol in _LOCAL_PROTOCOLS
        if self._is_local:
            # Absolute and resolved, so containment checks compare like with like.
            base = UPath(Path(base.path).expanduser().resolve())
        self._base: UPath = base

    @property
    def base(self) -> UPath:
        """The root folder or URL every asset's files live under."""
        return self._base

    @property
    def is_local(self) -> bool:
        """True for a local folder (atomic rename, file paths, lazy scans)."""
        return self._is_local

    def __repr__(self) -> str:
        return f"AssetStore({str(self.base)!r})"

    # --- paths -------------------------------------------------------------------------------
    def folder(self, key: AssetKeyLike) -> UPath:
        """The folder of a partitioned asset's files."""
        path = self.base.joinpath(*key_parts(key))
        self._check_inside(path)
        return path

    def path(self, key: AssetKeyLike, partition: str | None = None) -> UPath:
        """The file of an unpartitioned asset, or of one partition."""
        parts = key_parts(key)
        if partition is None:
            path = self.base.joinpath(*parts[:-1], parts[-1] + EXTENSION)
        else:
            check_partition_key(partition, "/".join(parts))
            path = self.base.joinpath(*parts, partition + EXTENSION)
        self._check_inside(path)
        return path

    def _check_inside(self, path: UPath) -> None:
        """Refuse a path that leaves the base (a symlinked folder pointing elsewhere): the
        store never writes or reads outside the folder it was given."""
        if self.is_local:
            target = Path(path.path).resolve()
            base = Path(self.base.path)
            inside = target.is_relative_to(base) and target != base
        else:
            root = posixpath.normpath(self.base.path).rstrip("/") + "/"
            inside = posixpath.normpath(path.path).startswith(root)
        if not inside:
            raise ValueError(
                f"refusing to use {path}: it resolves outside the IO manager base {self.base}; "
                "remove the link or choose another base_dir"
            )

    def exists(self, key: AssetKeyLike, partition: str | None = None) -> bool:
        """Whether the asset's (or the partition's) file is there."""
        return bool(self.path(key, partition).exists())

    def partitions(self, key: AssetKeyLike) -> list[str]:
        """Partition keys with a file present, sorted; hidden (in-flight) files skipped; [] when
        the asset has no folder yet."""
        folder = self.folder(key)
        if not folder.exists():
            return []
        names = [p.name for p in folder.iterdir() if p.is_file()]
        return sorted(
            n[: -len(EXTENSION)] for n in names if n.endswith(EXTENSION) and not n.startswith(".")
        )

    def local_files(self, key: AssetKeyLike) -> list[Path]:
        """The partition files of a local store, sorted by partition key, for readers that
        want file paths."""
        if not self.is_local:
            raise ValueError(
                f"{self.base} is not a local folder, so it has no file paths; "
                "use scan(), scan_partitions() or read() instead"
            )
        return [Path(self.path(key, p).path) for p in self.partitions(key)]

    # --- writing -----------------------------------------------------------------------------
    def write(self, key: AssetKeyLike, partition: str | None, frame: pl.DataFrame) -> UPath:
        """Write `frame` as the asset's (or partition's) file, atomically; returns its path."""
        path = self.path(key, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.is_local:
            _replace_atomically(frame, Path(path.path))
        else:
            # One put of the finished bytes: a failed serialization never reaches the store.
            buffer = io.BytesIO()
            frame.write_parquet(buffer, **PARQUET_OPTIONS)
            path.write_bytes(buffer.getvalue())
        return path

    # --- reading -----------------------------------------------------------------------------
    def _require(self, key: AssetKeyLike, partition: str | None) -> UPath:
        path = self.path(key, partition)
        if not path.exists():
            asset = "/".join(key_parts(key))
            what = f"partition {partition!r} of asset {asset}" if partition else f"asset {asset}"
            raise FileNotFoundError(
                f"no Parquet file for {what}: {path} does not exist (materialize it first)"
            )
        return path

    def read(
        self,
        key: AssetKeyLike,
        partition: str | None = None,
        *,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """The asset's (or partition's) frame, only `columns` if given; FileNotFoundError
        naming the asset and partition when it was never written."""
        path = self._require(key, partition)
        selected = None if columns is None else list(columns)
        if self.is_local:
            return pl.read_parquet(Path(path.path), columns=selected)
        with path.open("rb") as file:
            return pl.read_parquet(file, columns=selected)

    def scan(self, key: AssetKeyLike, partition: str | None = None) -> pl.LazyFrame:
        """A lazy frame of the file. Local: a Parquet scan, so only the columns and rows used
        are read; remote: the file is read, then made lazy."""
        path = self._require(key, partition)
        if self.is_local:
            return pl.scan_parquet(Path(path.path))
        return self.read(key, partition).lazy()

    def scan_partitions(
        self, key: AssetKeyLike, partitions: Sequence[str] | None = None
    ) -> dict[str, pl.LazyFrame]:
        """{partition_key: lazy frame} of the given partitions (every partition present when
        None); a given partition without a file raises FileNotFoundError."""
        keys = self.partitions(key) if partitions is None else list(partitions)
        return {p: self.scan(key, p) for p in keys}


def _replace_atomically(frame: pl.DataFrame, target: Path) -> None:
    """Write `frame` to a hidden temporary sibling, fsync it, then rename it onto `target`:
    readers see the old file or the new one, never part of one."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        frame.write_parquet(temporary, **PARQUET_OPTIONS)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
