"""Parquet IO manager on Dagster's public IO manager API: one file per (asset, partition),
atomic local writes, any fsspec base. The path layout belongs to `core.storage.AssetStore`;
`ParquetIOManager.store()` hands the same store to sensors, trace and exports.

Outputs are polars DataFrames. A run over several partitions returns
`dict[partition_key, pl.DataFrame]` and each frame goes to its own file. Loading partitions of
an upstream asset gives `{partition_key: frame}` when the consumer takes several partitions,
is unpartitioned, or annotates the input as a dict; a partitioned step reading its own single
partition gets the frame itself. `None` (a whole output or one partition's value) is not
written. An input annotated `pl.LazyFrame` (or `dict[str, pl.LazyFrame]`) gets a lazy scan. An
input with metadata `allow_missing_partitions: True` skips partitions without a file; an
unpartitioned input with `allow_missing: True` is None when its file does not exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from condor_dagster.core.storage import AssetStore, check_partition_key, default_assets_dir

__all__ = ["ParquetIOManager", "check_partition_key"]


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores polars DataFrames as zstd Parquet files, one per (asset, partition)."""

    base_dir: str | None = Field(
        default=None,
        description="Root folder or fsspec URL (e.g. s3://bucket/prefix); "
        "default CONDOR_ASSETS_DIR, else <CONDOR_DATA_DIR>/assets.",
    )

    def store(self) -> AssetStore:
        """The store this IO manager reads and writes (its base resolved now, so a changed
        CONDOR_DATA_DIR is followed)."""
        return AssetStore(self.base_dir or default_assets_dir())

    # --- writing -----------------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Write the asset's frame, or one file per partition of the run."""
        asset = context.asset_key.to_user_string()
        if obj is None:
            context.log.debug(f"{asset}: output is None, not written")
            return
        store = self.store()
        if not context.has_asset_partitions:
            frame = _require_frame(obj, asset)
            path = store.write(context.asset_key.path, None, frame)
            context.add_output_metadata(_frame_metadata(frame, str(path)))
            return
        partition_keys = list(context.asset_partition_keys)
        for partition in partition_keys:  # all checked before anything is written
            check_partition_key(partition, asset)
        frames = _frames_by_partition(obj, partition_keys, asset)
        written = _write_partitions(context, store, frames)
        context.add_output_metadata(_partitions_metadata(store, context, partition_keys, written))

    # --- reading -----------------------------------------------------------------------------
    def load_input(self, context: dg.InputContext) -> Any:
        """The upstream frame (or lazy scan); for partitions, `{partition_key: frame}` unless a
        partitioned step reads its single own partition into a non-dict input."""
        store = self.store()
        key = context.asset_key.path
        annotation = _input_annotation(context)
        lazy = _wants_lazy(annotation)
        metadata = context.definition_metadata or {}
        if not context.has_asset_partitions:
            if metadata.get("allow_missing") and not store.exists(key):
                return None  # an optional input (sft_dataset's extras of a method not run yet)
            return store.scan(key) if lazy else store.read(key)
        asset = context.asset_key.to_user_string()
        # AssetIn(metadata=...) reaches the IO manager as the input's definition metadata
        # (where UPathIOManager reads allow_missing_partitions too).
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        partitions = list(context.asset_partition_keys)
        loaded: dict[str, Any] = {}
        for partition in partitions:
            check_partition_key(partition, asset)
            if allow_missing and not store.exists(key, partition):
                continue
            loaded[partition] = store.scan(key, partition) if lazy else store.read(key, partition)
        if len(loaded) < len(partitions):
            skipped = sorted(set(partitions) - set(loaded))
            context.log.info(
                f"{asset}: {len(skipped)} of {len(partitions)} partitions have no file and were "
                f"skipped (allow_missing_partitions): {skipped[:20]}"
                f"{' ...' if len(skipped) > 20 else ''}"
            )
        own_partition = context.has_partition_key and len(partitions) == 1
        if own_partition and not _is_dict_annotation(annotation) and loaded:
            return next(iter(loaded.values()))
        return loaded


def _write_partitions(
    context: dg.OutputContext, store: AssetStore, frames: Mapping[str, pl.DataFrame | None]
) -> dict[str, pl.DataFrame]:
    """Write each partition's frame (None: nothing to write); returns the frames written."""
    asset = context.asset_key.to_user_string()
    written: dict[str, pl.DataFrame] = {}
    for partition, frame in frames.items():
        if frame is None:
            context.log.debug(f"{asset} partition {partition}: value is None, not written")
            continue
        path = store.write(context.asset_key.path, partition, frame)
        context.log.debug(f"{asset} partition {partition}: wrote {path}")
        written[partition] = frame
    return written


def _partitions_metadata(
    store: AssetStore,
    context: dg.OutputContext,
    partition_keys: list[str],
    written: Mapping[str, pl.DataFrame],
) -> dict[str, dg.MetadataValue]:
    """One partition: its file, rows and schema. Several: the asset's folder and the totals,
    which Dagster attaches to every partition's materialization; each partition's own counts
    are the asset's to record (public AssetExecutionContext.add_asset_metadata with
    partition_key=...)."""
    key = context.asset_key.path
    if len(partition_keys) == 1 and written:
        frame = next(iter(written.values()))
        return {
            **_frame_metadata(frame, str(store.path(key, partition_keys[0]))),
            "dagster/partition_row_count": dg.MetadataValue.int(frame.height),
        }
    return {
        "path": dg.MetadataValue.path(str(store.folder(key))),
        "partitions_written": dg.MetadataValue.int(len(written)),
        "total_row_count": dg.MetadataValue.int(sum(f.height for f in written.values())),
    }


def _input_annotation(context: dg.InputContext) -> Any:
    """The input's Python type, `Any` when the context has no Dagster type (a context built by
    `dg.build_input_context` without one, as tests and scripts do)."""
    try:
        return context.dagster_type.typing_type
    except dg.DagsterInvariantViolationError:
        return Any


def _annotation(context: dg.InputContext) -> Any:
    """The input's type annotation (Any for a context built without one, as in tests)."""
    try:
        return context.dagster_type.typing_type
    except dg.DagsterInvariantViolationError:
        return Any


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


def _require_frame(obj: Any, asset: str) -> pl.DataFrame:
    """`obj` if it is a DataFrame; a LazyFrame or anything else is refused with the fix."""
    if not isinstance(obj, pl.DataFrame):
        hint = " (call .collect() first)" if isinstance(obj, pl.LazyFrame) else ""
        raise TypeError(
            f"ParquetIOManager stores polars DataFrames; asset {asset} returned "
            f"{type(obj).__name__}{hint}"
        )
    return obj


def _frames_by_partition(
    obj: Any, partition_keys: list[str], asset: str
) -> dict[str, pl.DataFrame | None]:
    """The frame (or None) to write for each partition of the run."""
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
            key: None if obj[key] is None else _require_frame(obj[key], asset)
            for key in partition_keys
        }
    if len(partition_keys) == 1:
        return {partition_keys[0]: _require_frame(obj, asset)}
    shown = sorted(partition_keys)
    raise TypeError(
        f"asset {asset} ran for {len(shown)} partitions ({', '.join(shown[:5])}"
        f"{', ...' if len(shown) > 5 else ''}): return dict[partition_key, pl.DataFrame]"
    )


def _frame_metadata(frame: pl.DataFrame, path: str) -> dict[str, dg.MetadataValue]:
    """Path, row count and column schema: what the UI shows for a materialization."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )
    return {
        "path": dg.MetadataValue.path(path),
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "dagster/column_schema": dg.MetadataValue.table_schema(schema),
    }
