"""A writer process for the concurrent-write tests: stores one frame as partition "t1" of
raw_questions through the Parquet IO manager, `rounds` times, printing a line before each write.

    python partition_writer.py BASE_DIR WRITER ROWS ROUNDS
"""

import sys

import dagster as dg
import polars as pl

from condor_dagster.resources.parquet_io import ParquetIOManager


def frame_of(writer: int, rows: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "writer": [writer] * rows,
            "i": range(rows),
            "text": [f"行 {writer} {i}" for i in range(rows)],
        }
    )


def main(base: str, writer: int, rows: int, rounds: int) -> None:
    frame = frame_of(writer, rows)
    io = ParquetIOManager(base_dir=base)
    for n in range(rounds):
        print(f"writing {n}", flush=True)
        context = dg.build_output_context(
            asset_key=dg.AssetKey("raw_questions"), partition_key="t1"
        )
        io.handle_output(context, frame)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
