"""Parquet IO manager on Dagster's public IO manager API: one file per (asset, partition),
atomic local writes, any fsspec base. The path layout belongs to `core.storage.AssetStore`;
`ParquetIOManager.store()` hands the same store to sensors, trace and exports.

Outputs are polars DataFrames. A run over several partitions returns
`dict[partition_key, pl.DataFrame]` and each frame goes to its own file. Loading partitions of
an upstream asset gives `{partition_key: frame}` when the consumer takes several partitions,
is unpartitioned, or annotates the input as a dict; a partitioned step reading its own single
partition gets the frame itself. `None` (a whole output or one partition's value) is not
written. An input annotated `pl.LazyFrame` (or `dict[str, pl.LazyFrame]`) gets a lazy scan. An
input with metadata `allow_missing_partitions: True` skips partitions without a file.
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
        asset = context.asset_key.to_user_string()
        if obj is None:
            context.log.debug(f"{asset}: output is None, not written")
            return
        store = self.store()
        key = context.asset_key.path
        if not context.has_asset_partitions:
            frame = _require_frame(obj, asset)
            path = store.write(key, None, frame)
            context.add_output_metadata(_frame_metadata(frame, str(path)))
            return
        partition_keys = list(context.asset_partition_keys)
        for partition in partition_keys:
            check_partition_key(partition, asset)
        frames = _frames_by_partition(obj, partition_keys, asset)
        written: dict[str, pl.DataFrame] = {}
        for partition, frame in frames.items():
            if frame is None:
                context.log.debug(f"{asset} partition {partition}: value is None, not written")
                continue
            path = store.write(key, partition, frame)
            context.log.debug(f"{asset} partition {partition}: wrote {path}")
            written[partition] = frame
        if len(partition_keys) == 1 and written:
            frame = next(iter(written.values()))
            path = str(store.path(key, partition_keys[0]))
            context.add_output_metadata(
                {
                    **_frame_metadata(frame, path),
                    "dagster/partition_row_count": dg.MetadataValue.int(frame.height),
                }
            )
            return
        # Several partitions: the asset records each partition's own counts (public
        # AssetExecutionContext.add_asset_metadata); here the folder and the totals.
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(store.folder(key))),
                "partitions_written": dg.MetadataValue.int(len(written)),
                "total_row_count": dg.MetadataValue.int(sum(f.height for f in written.values())),
            }
        )

    # --- reading -----------------------------------------------------------------------------
    def load_input(self, context: dg.InputContext) -> Any:
        store = self.store()
        key = context.asset_key.path
        annotation = context.dagster_type.typing_type
        lazy = _wants_lazy(annotation)
        if not context.has_asset_partitions:
            return store.scan(key) if lazy else store.read(key)
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        partitions = list(context.asset_partition_keys)
        loaded: dict[str, Any] = {}
        for partition in partitions:
            check_partition_key(partition, context.asset_key.to_user_string())
            if allow_missing and not store.exists(key, partition):
                context.log.debug(f"partition {partition} of {key} has no file: skipped")
                continue
            loaded[partition] = store.scan(key, partition) if lazy else store.read(key, partition)
        own_partition = context.has_partition_key and len(partitions) == 1
        if own_partition and not _is_dict_annotation(annotation) and loaded:
            return next(iter(loaded.values()))
        return loaded


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
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )
    return {
        "path": dg.MetadataValue.path(path),
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "dagster/column_schema": dg.MetadataValue.table_schema(schema),
    }
