"""Parquet IO manager: one file per (asset, partition), atomic local writes, any fsspec path.

Layout under `base_dir` (default `<data_dir>/assets`):

    <asset/key/path>.parquet                    unpartitioned asset
    <asset/key/path>/<partition_key>.parquet    one file per partition

Outputs are polars DataFrames. A run over several partitions returns
`dict[partition_key, pl.DataFrame]` and each frame goes to its own file; loading several
upstream partitions gives the same kind of dict (also for one partition when the input is
annotated as a dict). `None` (a whole output or one partition's value) is not written.
An input annotated `pl.LazyFrame` (or `dict[str, pl.LazyFrame]`) gets `pl.scan_parquet` of
the local file instead of the loaded frame (other filesystems: the loaded frame, as lazy).

Local writes go to a hidden temporary sibling, are fsynced, then `os.replace`d onto the final
name, so a killed run never leaves a half-written file and concurrent writers of one partition
leave one complete file (the last to finish). Other fsspec filesystems (object stores) get the
whole file in one `write_bytes`: they publish an object only when its upload completes.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.core.paths import data_dir
from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN

if TYPE_CHECKING:
    from upath import UPath

# Partition keys become file names: a safe slug, never a path (no "/", no leading "." or "..").
_LOCAL_PROTOCOLS = ("", "file", "local")
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "statistics": True}


def check_partition_key(partition_key: str, asset: str = "") -> str:
    """Return `partition_key` if it is a safe file name, else raise ValueError."""
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


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores polars DataFrames as zstd Parquet files, one per (asset, partition)."""

    base_dir: str | None = Field(
        default=None,
        description="Root folder or fsspec URL (e.g. s3://bucket/prefix); "
        "default <CONDOR_DATA_DIR>/assets.",
    )

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        self._store().handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> Any:
        return self._store().load_input(context)

    def _store(self) -> _ParquetStore:
        # Built per call: the default base follows CONDOR_DATA_DIR at run time.
        return _ParquetStore(self.base_dir if self.base_dir else str(data_dir() / "assets"))


class _ParquetStore(dg.UPathIOManager):
    """The UPathIOManager that does the work; ParquetIOManager only carries the config."""

    extension = ".parquet"

    def __init__(self, base_dir: str) -> None:
        from upath import UPath

        base = UPath(base_dir)
        self._local = base.protocol in _LOCAL_PROTOCOLS
        if self._local:
            # Absolute and resolved, so containment checks compare like with like.
            base = UPath(Path(base.path).expanduser().resolve())
        super().__init__(base_path=base)

    # --- paths -------------------------------------------------------------------------------

    def get_path_for_partition(
        self, context: dg.InputContext | dg.OutputContext, path: UPath, partition: str
    ) -> UPath:
        check_partition_key(partition, context.asset_key.to_user_string())
        return path / partition

    def _check_inside_base(self, path: UPath) -> None:
        base = self._base_path
        if self._local:
            target = Path(path.path).resolve()
            inside = target.is_relative_to(Path(base.path)) and target != Path(base.path)
        else:
            root = posixpath.normpath(base.path).rstrip("/") + "/"
            inside = posixpath.normpath(path.path).startswith(root)
        if not inside:
            raise ValueError(f"refusing to use {path}: it is outside the IO manager base {base}")

    # --- writing -----------------------------------------------------------------------------

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            context.log.debug(f"{context.asset_key.to_user_string()}: output is None, not written")
            return
        if not context.has_asset_partitions:
            path = self._get_path(context)
            self.dump_to_path(context, _require_frame(obj, context), path)
            context.add_output_metadata(_frame_metadata(obj, path, partitioned=False))
            return

        paths = self._get_paths_for_partitions(context)
        frames = _frames_by_partition(obj, list(paths), context)
        metadata_by_partition = {}
        for partition_key, frame in frames.items():
            if frame is None:
                context.log.debug(f"partition {partition_key}: value is None, not written")
                continue
            self.dump_to_path(context, frame, paths[partition_key])
            metadata_by_partition[partition_key] = _frame_metadata(
                frame, paths[partition_key], partitioned=True
            )
        if len(paths) == 1:
            context.add_output_metadata(next(iter(metadata_by_partition.values()), {}))
            return
        # Several partitions: give each partition's materialization its own path and counts.
        asset_dir = self._get_path_without_extension(context)
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(asset_dir)),
                "partitions_written": dg.MetadataValue.int(len(metadata_by_partition)),
                "total_row_count": dg.MetadataValue.int(
                    sum(frame.height for frame in frames.values() if frame is not None)
                ),
            }
        )
        try:
            step_context = context.step_context
        except dg.DagsterInvariantViolationError:  # a hand-built context, outside a run
            return
        for partition_key, metadata in metadata_by_partition.items():
            step_context.add_asset_metadata(
                metadata, asset_key=context.asset_key, partition_key=partition_key
            )

    def dump_to_path(self, context: dg.OutputContext, obj: pl.DataFrame, path: UPath) -> None:
        self._check_inside_base(path)
        self.make_directory(path.parent)
        context.log.debug(self.get_writing_output_log_message(path))
        if self._local:
            _replace_atomically(obj, Path(path.path))
        else:
            # One put of the finished bytes: a failed serialization never reaches the store.
            buffer = io.BytesIO()
            obj.write_parquet(buffer, **_PARQUET_OPTIONS)
            path.write_bytes(buffer.getvalue())

    # --- reading -----------------------------------------------------------------------------

    def load_input(self, context: dg.InputContext) -> Any:
        loaded = super().load_input(context)
        wants_dict = context.has_asset_key and context.has_asset_partitions
        if wants_dict and _is_dict_annotation(context.dagster_type.typing_type):
            if isinstance(loaded, (pl.DataFrame, pl.LazyFrame)):  # one partition, as a dict
                return {context.asset_partition_keys[0]: loaded}
            return loaded if loaded is not None else {}
        return loaded

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pl.DataFrame | pl.LazyFrame:
        self._check_inside_base(path)
        if not self.path_exists(path):
            asset = context.asset_key.to_user_string() if context.has_asset_key else "input"
            what = (
                f"partition {path.name.removesuffix(self.extension or '')!r} of asset {asset}"
                if context.has_asset_partitions
                else f"asset {asset}"
            )
            raise FileNotFoundError(f"no Parquet file for {what}: {path} does not exist")
        lazy = _wants_lazy(context.dagster_type.typing_type)
        if self._local:
            # A LazyFrame input is a scan: the consumer reads only the columns and rows it uses.
            return pl.scan_parquet(Path(path.path)) if lazy else pl.read_parquet(Path(path.path))
        with path.open("rb") as file:
            frame = pl.read_parquet(file)
        return frame.lazy() if lazy else frame


def _is_dict_annotation(annotation: Any) -> bool:
    """True for `dict`, `dict[str, X]`, `Mapping[str, X]` input annotations."""
    return annotation in (dict, Mapping) or getattr(annotation, "__origin__", None) in (
        dict,
        Mapping,
    )


def _wants_lazy(annotation: Any) -> bool:
    """True for `pl.LazyFrame` and `dict[str, pl.LazyFrame]` (or Mapping) input annotations."""
    if annotation is pl.LazyFrame:
        return True
    args: tuple[Any, ...] = getattr(annotation, "__args__", ())
    return _is_dict_annotation(annotation) and args[-1:] == (pl.LazyFrame,)


def _replace_atomically(frame: pl.DataFrame, target: Path) -> None:
    """Write `frame` to a hidden temporary sibling, fsync it, then rename it onto `target`."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        frame.write_parquet(temporary, **_PARQUET_OPTIONS)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _require_frame(obj: Any, context: dg.OutputContext) -> pl.DataFrame:
    if not isinstance(obj, pl.DataFrame):
        hint = " (call .collect() first)" if isinstance(obj, pl.LazyFrame) else ""
        raise TypeError(
            f"ParquetIOManager stores polars DataFrames; asset "
            f"{context.asset_key.to_user_string()} returned {type(obj).__name__}{hint}"
        )
    return obj


def _frames_by_partition(
    obj: Any, partition_keys: list[str], context: dg.OutputContext
) -> dict[str, pl.DataFrame | None]:
    """The frame (or None) to write for each partition of the run."""
    asset = context.asset_key.to_user_string()
    if isinstance(obj, Mapping):
        missing = sorted(key for key in partition_keys if key not in obj)
        extra = sorted(str(key) for key in obj if key not in partition_keys)
        if missing or extra:
            # Strict on purpose: a forgotten partition would be recorded as materialized with
            # no file behind it. None says "nothing to write" explicitly.
            raise ValueError(
                f"asset {asset} returned a dict whose keys do not match the run's partitions: "
                f"missing {missing} (use None for nothing to write), not in this run {extra}"
            )
        return {
            key: None if obj[key] is None else _require_frame(obj[key], context)
            for key in partition_keys
        }
    if len(partition_keys) == 1:
        return {partition_keys[0]: _require_frame(obj, context)}
    shown = sorted(partition_keys)
    raise TypeError(
        f"asset {asset} ran for {len(shown)} partitions ({', '.join(shown[:5])}"
        f"{', ...' if len(shown) > 5 else ''}): return dict[partition_key, pl.DataFrame]"
    )


def _frame_metadata(
    frame: pl.DataFrame, path: UPath, *, partitioned: bool
) -> dict[str, dg.MetadataValue]:
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )
    metadata: dict[str, dg.MetadataValue] = {
        "path": dg.MetadataValue.path(str(path)),
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "dagster/column_schema": dg.MetadataValue.table_schema(schema),
    }
    if partitioned:
        metadata["dagster/partition_row_count"] = dg.MetadataValue.int(frame.height)
    return metadata
