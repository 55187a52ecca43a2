"""ParquetIOManager through real Dagster runs: layout, multi-partition runs, safety, atomicity."""

import threading
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from condor_dagster.resources.parquet_io import ParquetIOManager, check_partition_key

TAGS = dg.DynamicPartitionsDefinition(name="tags")
TAG_KEYS = ["ai.ml", "art", "cooking"]
RANGE_TAGS = {
    "dagster/asset_partition_range_start": "ai.ml",
    "dagster/asset_partition_range_end": "cooking",
}


def make_frame(tag: str) -> pl.DataFrame:
    """A frame whose size and content depend on the tag: CJK, emoji, lists, nulls."""
    n = len(tag) + 1
    return pl.DataFrame(
        {
            "id": [f"{tag}-{i}" for i in range(n)],
            "tag_id": [tag] * n,
            "text": [f"什么是{tag}？ 🤖 #{i}" for i in range(n)],
            "keywords": [[tag, "知识", "🌍"][: i % 3 + 1] for i in range(n)],
            "score": [i / 3 if i % 2 else None for i in range(n)],
        },
        schema_overrides={"score": pl.Float64},
    )


@dg.asset(partitions_def=TAGS)
def questions(context: dg.AssetExecutionContext) -> Any:
    frames = {key: make_frame(key) for key in context.partition_keys}
    return frames if len(frames) > 1 else frames[context.partition_key]


RECEIVED: dict[str, Any] = {}


@dg.asset(partitions_def=TAGS)
def answers(questions: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    RECEIVED["answers"] = questions
    return {key: frame.with_columns(answer=pl.lit("ok")) for key, frame in questions.items()}


@pytest.fixture
def instance() -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tags", TAG_KEYS)
    return instance


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "store" / "assets"


def io(base: Path) -> dict[str, object]:
    return {"io_manager": ParquetIOManager(base_dir=str(base))}


def schema_columns(event: dg.AssetMaterialization) -> list[tuple[str, str]]:
    schema = event.metadata["dagster/column_schema"].value
    assert isinstance(schema, dg.TableSchema)
    return [(column.name, column.type) for column in schema.columns]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_single_partition_run_writes_one_file_with_metadata(
    instance: dg.DagsterInstance, base: Path
) -> None:
    result = dg.materialize([questions], partition_key="art", instance=instance, resources=io(base))

    assert files_under(base) == ["questions/art.parquet"]
    assert_frame_equal(pl.read_parquet(base / "questions" / "art.parquet"), make_frame("art"))
    (event,) = result.asset_materializations_for_node("questions")
    assert event.partition == "art"
    assert event.metadata["path"].value == str(base / "questions" / "art.parquet")
    assert event.metadata["dagster/row_count"].value == make_frame("art").height
    assert schema_columns(event) == [
        ("id", "String"),
        ("tag_id", "String"),
        ("text", "String"),
        ("keywords", "List(String)"),
        ("score", "Float64"),
    ]


def test_range_run_writes_one_file_per_partition_and_downstream_gets_a_dict(
    instance: dg.DagsterInstance, base: Path
) -> None:
    RECEIVED.clear()
    result = dg.materialize(
        [questions, answers], instance=instance, resources=io(base), tags=RANGE_TAGS
    )

    assert files_under(base) == sorted(
        [f"questions/{k}.parquet" for k in TAG_KEYS] + [f"answers/{k}.parquet" for k in TAG_KEYS]
    )
    received = RECEIVED["answers"]
    assert sorted(received) == TAG_KEYS
    for key in TAG_KEYS:
        # Round trip: what the asset returned is what the next asset and the file hold.
        assert_frame_equal(received[key], make_frame(key))
        assert_frame_equal(pl.read_parquet(base / "questions" / f"{key}.parquet"), make_frame(key))
        stored_answers = pl.read_parquet(base / "answers" / f"{key}.parquet")
        assert stored_answers["answer"].to_list() == ["ok"] * make_frame(key).height

    # Each partition has its materialization; the IO manager records the asset's folder and
    # the totals (a stage adds each partition's own counts through the public
    # AssetExecutionContext.add_asset_metadata: tests/assets/test_condor_void.py checks them).
    events = {str(e.partition): e for e in result.asset_materializations_for_node("questions")}
    assert sorted(events) == TAG_KEYS
    for event in events.values():
        assert event.metadata["path"].value == str(base / "questions")
        assert event.metadata["partitions_written"].value == len(TAG_KEYS)
        assert event.metadata["total_row_count"].value == sum(
            make_frame(k).height for k in TAG_KEYS
        )


def test_single_partition_input_annotated_as_dict_is_a_dict(
    instance: dg.DagsterInstance, base: Path
) -> None:
    RECEIVED.clear()
    dg.materialize([questions, answers], partition_key="art", instance=instance, resources=io(base))
    assert list(RECEIVED["answers"]) == ["art"]
    assert_frame_equal(RECEIVED["answers"]["art"], make_frame("art"))


def test_lazy_inputs_are_scans_of_the_stored_files(
    instance: dg.DagsterInstance, base: Path
) -> None:
    @dg.asset(partitions_def=TAGS)
    def lazy_one(questions: pl.LazyFrame) -> pl.DataFrame:
        RECEIVED["lazy_one"] = questions
        return questions.collect()

    @dg.asset
    def lazy_all(questions: dict[str, pl.LazyFrame]) -> None:
        RECEIVED["lazy_all"] = questions

    RECEIVED.clear()
    dg.materialize([questions], instance=instance, resources=io(base), tags=RANGE_TAGS)
    dg.materialize(
        [questions, lazy_one],
        selection=[lazy_one],
        partition_key="art",
        instance=instance,
        resources=io(base),
    )
    dg.materialize(
        [questions, lazy_all], selection=[lazy_all], instance=instance, resources=io(base)
    )

    assert isinstance(RECEIVED["lazy_one"], pl.LazyFrame)
    assert_frame_equal(RECEIVED["lazy_one"].collect(), make_frame("art"))
    lazy = RECEIVED["lazy_all"]
    assert sorted(lazy) == TAG_KEYS
    assert all(isinstance(frame, pl.LazyFrame) for frame in lazy.values())
    assert_frame_equal(lazy["cooking"].collect(), make_frame("cooking"))


def test_unpartitioned_downstream_gets_every_upstream_partition(
    instance: dg.DagsterInstance, base: Path
) -> None:
    @dg.asset
    def merged(questions: dict[str, pl.DataFrame]) -> pl.DataFrame:
        RECEIVED["merged"] = questions
        return pl.concat([questions[key] for key in sorted(questions)])

    RECEIVED.clear()
    dg.materialize([questions], instance=instance, resources=io(base), tags=RANGE_TAGS)
    dg.materialize([questions, merged], selection=[merged], instance=instance, resources=io(base))

    assert sorted(RECEIVED["merged"]) == TAG_KEYS
    expected = pl.concat([make_frame(key) for key in TAG_KEYS])
    assert_frame_equal(pl.read_parquet(base / "merged.parquet"), expected)


def test_store_is_the_io_managers_layout(instance: dg.DagsterInstance, base: Path) -> None:
    dg.materialize([questions], instance=instance, resources=io(base), tags=RANGE_TAGS)
    store = ParquetIOManager(base_dir=str(base)).store()
    assert store.partitions(["questions"]) == TAG_KEYS
    assert_frame_equal(store.read("questions", "art"), make_frame("art"))


def test_unpartitioned_asset_and_none_output(base: Path) -> None:
    @dg.asset(key_prefix=["condor"])
    def dataset() -> pl.DataFrame:
        return make_frame("all")

    @dg.asset(key_prefix=["condor"])
    def report(dataset: pl.DataFrame) -> Any:
        assert_frame_equal(dataset, make_frame("all"))
        return None

    result = dg.materialize([dataset, report], resources=io(base))

    assert result.success
    assert files_under(base) == ["condor/dataset.parquet"]  # None output: no file
    event = result.asset_materializations_for_node("condor__dataset")[0]
    assert event.metadata["dagster/row_count"].value == 4


def test_path_like_partition_keys_are_rejected(tmp_path: Path, base: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tags", ["../../etc", "a/b", "Upper"])
    for key in ["../../etc", "a/b", "Upper"]:
        with pytest.raises(ValueError, match="cannot be stored as a file"):
            dg.materialize([questions], partition_key=key, instance=instance, resources=io(base))
    assert files_under(tmp_path) == []  # nothing written, inside or outside base


def test_check_partition_key() -> None:
    assert check_partition_key("ai.ml_2-x") == "ai.ml_2-x"
    for bad in ["", ".", "..", ".hidden", "-x", "a/b", "a\\b", "abc\n", "Ab", "é", "a" * 65]:
        with pytest.raises(ValueError, match="must match"):
            check_partition_key(bad)


def test_missing_partition_raises_naming_partition_and_path(
    instance: dg.DagsterInstance, base: Path
) -> None:
    with pytest.raises(FileNotFoundError) as failure:
        dg.materialize(
            [questions, answers],
            selection=[answers],
            partition_key="art",
            instance=instance,
            resources=io(base),
        )
    message = str(failure.value)
    assert "partition 'art' of asset questions" in message
    assert str(base / "questions" / "art.parquet") in message


def test_allow_missing_partitions_skips_absent_files(
    instance: dg.DagsterInstance, base: Path
) -> None:
    @dg.asset(
        partitions_def=TAGS,
        ins={"questions": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    )
    def lenient(
        context: dg.AssetExecutionContext, questions: dict[str, pl.DataFrame]
    ) -> dict[str, pl.DataFrame | None]:
        RECEIVED["lenient"] = questions
        # None: nothing to write for a partition whose input is missing.
        return {key: questions.get(key) for key in context.partition_keys}

    dg.materialize([questions], partition_key="art", instance=instance, resources=io(base))
    dg.materialize(
        [questions, lenient],
        selection=[lenient],
        instance=instance,
        resources=io(base),
        tags=RANGE_TAGS,
    )
    assert list(RECEIVED["lenient"]) == ["art"]
    assert files_under(base / "lenient") == ["art.parquet"]


def test_wrong_output_shapes_are_explained(instance: dg.DagsterInstance, base: Path) -> None:
    @dg.asset(partitions_def=TAGS, name="questions")
    def one_frame_for_many() -> pl.DataFrame:
        return make_frame("x")

    with pytest.raises(
        TypeError, match=r"ran for 3 partitions \(ai.ml, art, cooking\).*dict\[partition_key"
    ):
        dg.materialize([one_frame_for_many], instance=instance, resources=io(base), tags=RANGE_TAGS)

    @dg.asset(partitions_def=TAGS, name="questions")
    def wrong_keys() -> dict[str, pl.DataFrame]:
        return {"art": make_frame("art"), "zzz": make_frame("zzz")}

    expected = r"missing \['ai.ml', 'cooking'\].*not in this run \['zzz'\]"
    with pytest.raises(ValueError, match=expected):
        dg.materialize([wrong_keys], instance=instance, resources=io(base), tags=RANGE_TAGS)
    assert files_under(base) == []


def test_failed_write_leaves_previous_file_and_no_temporary(
    instance: dg.DagsterInstance, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dg.materialize([questions], partition_key="art", instance=instance, resources=io(base))
    final = base / "questions" / "art.parquet"
    before = final.read_bytes()

    def write_half_then_fail(self: pl.DataFrame, file: Any, **kwargs: Any) -> None:
        Path(file).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        dg.materialize([questions], partition_key="art", instance=instance, resources=io(base))
    monkeypatch.undo()

    assert files_under(base) == ["questions/art.parquet"]  # no leftover temporary file
    assert final.read_bytes() == before


def test_unwritable_frame_leaves_no_file(instance: dg.DagsterInstance, base: Path) -> None:
    @dg.asset(partitions_def=TAGS, name="questions")
    def objects() -> pl.DataFrame:
        return pl.DataFrame({"o": [object(), object()]}, schema={"o": pl.Object})

    with pytest.raises(Exception, match=r"(?i)object"):
        dg.materialize([objects], partition_key="art", instance=instance, resources=io(base))
    assert files_under(base) == []


def test_concurrent_writers_of_one_partition_leave_one_complete_file(base: Path) -> None:
    # Two independent runs (own instances, like two processes) write partition "art" at once.
    frames = [
        pl.DataFrame({"writer": [w] * 300_000, "text": [f"行 {w} {i}" for i in range(300_000)]})
        for w in range(2)
    ]
    barrier = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    def run(writer: int) -> None:
        @dg.asset(partitions_def=TAGS, name="questions")
        def big() -> pl.DataFrame:
            barrier.wait()  # both runs reach the IO manager together
            return frames[writer]

        try:
            # Closed in this thread: SQLite connections must not be finalised in another one.
            with dg.DagsterInstance.ephemeral() as instance:
                instance.add_dynamic_partitions("tags", ["art"])
                dg.materialize([big], partition_key="art", instance=instance, resources=io(base))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert files_under(base) == ["questions/art.parquet"]
    stored = pl.read_parquet(base / "questions" / "art.parquet")
    assert any(stored.equals(frame) for frame in frames)


def test_fsspec_memory_filesystem_round_trip(instance: dg.DagsterInstance) -> None:
    import fsspec

    RECEIVED.clear()
    resources = {"io_manager": ParquetIOManager(base_dir="memory://condor-test/assets")}
    dg.materialize([questions, answers], instance=instance, resources=resources, tags=RANGE_TAGS)

    memory = fsspec.filesystem("memory")
    assert sorted(memory.ls("/condor-test/assets/questions", detail=False)) == [
        f"/condor-test/assets/questions/{k}.parquet" for k in TAG_KEYS
    ]
    with memory.open("/condor-test/assets/questions/art.parquet", "rb") as file:
        assert_frame_equal(pl.read_parquet(file), make_frame("art"))
    assert sorted(RECEIVED["answers"]) == TAG_KEYS


def test_default_base_dir_follows_condor_data_dir(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONDOR_DATA_DIR", str(tmp_path / "data"))
    dg.materialize(
        [questions],
        partition_key="art",
        instance=instance,
        resources={"io_manager": ParquetIOManager()},
    )
    assert (tmp_path / "data" / "assets" / "questions" / "art.parquet").is_file()
