"""AssetStore: the (asset, partition) -> Parquet file layout on a local folder and on fsspec's
memory filesystem, its key checks, atomic writes and reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from condor_dagster.core.storage import (
    AssetStore,
    check_partition_key,
    default_assets_dir,
    store_from_env,
)

KEY = ["condor", "raw_questions"]


def frame_of(tag: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": [f"{tag}-{i}" for i in range(len(tag))], "text": ["什么 🤖"] * len(tag)}
    )


@pytest.fixture
def memory_base() -> Iterator[str]:
    """A fresh memory:// folder per test, removed afterwards (the filesystem is global)."""
    name = f"condor-store-{uuid.uuid4().hex}"
    root = f"/{name}"
    yield f"memory://{name}"
    memory = fsspec.filesystem("memory")
    if memory.exists(root):
        memory.rm(root, recursive=True)


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> AssetStore:
    if request.param == "local":
        return AssetStore(str(tmp_path / "assets"))
    return AssetStore(request.getfixturevalue("memory_base"))


# --- layout ------------------------------------------------------------------------------------
def test_local_layout_is_key_path_then_partition(tmp_path: Path) -> None:
    store = AssetStore(str(tmp_path / "assets"))
    base = (tmp_path / "assets").resolve()
    assert store.is_local
    assert Path(store.base.path) == base
    assert Path(store.path(KEY).path) == base / "condor" / "raw_questions.parquet"
    assert Path(store.path(KEY, "art").path) == base / "condor" / "raw_questions" / "art.parquet"
    assert Path(store.folder(KEY).path) == base / "condor" / "raw_questions"


def test_memory_layout_is_key_path_then_partition(memory_base: str) -> None:
    store = AssetStore(memory_base)
    assert not store.is_local
    assert str(store.path(KEY, "art")) == f"{memory_base}/condor/raw_questions/art.parquet"
    assert (
        str(store.path("condor/knowledge_tree")) == f"{memory_base}/condor/knowledge_tree.parquet"
    )
    store.write(KEY, "art", frame_of("art"))
    root = memory_base.removeprefix("memory://")
    memory = fsspec.filesystem("memory")
    assert memory.ls(f"/{root}/condor/raw_questions", detail=False) == [
        f"/{root}/condor/raw_questions/art.parquet"
    ]


def test_str_and_list_keys_name_the_same_files(store: AssetStore) -> None:
    assert store.path("condor/raw_questions", "art") == store.path(KEY, "art")
    assert store.path("condor/raw_questions") == store.path(("condor", "raw_questions"))
    store.write("condor/raw_questions", "art", frame_of("art"))
    assert store.partitions(KEY) == ["art"]
    assert_frame_equal(store.read(KEY, "art"), frame_of("art"))


def test_local_base_is_expanded_and_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Path(AssetStore("~/assets").base.path) == (tmp_path / "home" / "assets").resolve()
    monkeypatch.chdir(tmp_path)
    assert Path(AssetStore("data/../assets").base.path) == (tmp_path / "assets").resolve()
    assert (
        Path(AssetStore(f"file://{tmp_path}/assets").base.path) == (tmp_path / "assets").resolve()
    )


# --- write, read, scan -------------------------------------------------------------------------
def test_write_read_scan_round_trip(store: AssetStore) -> None:
    assert not store.exists(KEY, "art")
    path = store.write(KEY, "art", frame_of("art"))
    store.write(KEY, "ai.ml", frame_of("ai.ml"))
    store.write(["condor", "knowledge_tree"], None, frame_of("tree"))

    assert path == store.path(KEY, "art")
    assert store.exists(KEY, "art") and store.exists(["condor", "knowledge_tree"])
    assert not store.exists(KEY, "cooking")
    assert_frame_equal(store.read(KEY, "art"), frame_of("art"))
    assert store.read(KEY, "art", columns=["id"]).columns == ["id"]
    assert_frame_equal(store.read("condor/knowledge_tree"), frame_of("tree"))
    scan = store.scan(KEY, "ai.ml")
    assert isinstance(scan, pl.LazyFrame)
    assert_frame_equal(scan.collect(), frame_of("ai.ml"))

    scans = store.scan_partitions(KEY)
    assert sorted(scans) == ["ai.ml", "art"]
    assert_frame_equal(scans["art"].collect(), frame_of("art"))
    assert list(store.scan_partitions(KEY, ["art"])) == ["art"]


def test_write_replaces_the_previous_file(store: AssetStore) -> None:
    store.write(KEY, "art", frame_of("first"))
    store.write(KEY, "art", frame_of("second"))
    assert_frame_equal(store.read(KEY, "art"), frame_of("second"))
    assert store.partitions(KEY) == ["art"]


def test_partitions_sorted_hidden_files_skipped_and_empty_without_folder(
    store: AssetStore,
) -> None:
    assert store.partitions(KEY) == []
    for tag in ["cooking", "ai.ml", "art"]:
        store.write(KEY, tag, frame_of(tag))
    folder = store.folder(KEY)
    # An in-flight temporary of a local write, and files that are not partitions.
    (folder / ".art.parquet.0123abcd.tmp").write_bytes(b"PAR1 half")
    (folder / ".hidden.parquet").write_bytes(b"PAR1 half")
    (folder / "notes.txt").write_text("not a partition")
    assert store.partitions(KEY) == ["ai.ml", "art", "cooking"]


def test_missing_file_names_asset_and_partition(store: AssetStore) -> None:
    with pytest.raises(FileNotFoundError, match=r"partition 'art' of asset condor/raw_questions"):
        store.read(KEY, "art")
    with pytest.raises(FileNotFoundError, match=r"partition 'art' of asset condor/raw_questions"):
        store.scan(KEY, "art")
    with pytest.raises(FileNotFoundError, match=r"for asset condor/knowledge_tree: .* not exist"):
        store.read(["condor", "knowledge_tree"])
    with pytest.raises(FileNotFoundError, match="partition 'zzz'"):
        store.scan_partitions(KEY, ["zzz"])


# --- atomicity (local) -------------------------------------------------------------------------
def test_failed_local_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AssetStore(str(tmp_path))
    store.write(KEY, "art", frame_of("art"))
    before = Path(store.path(KEY, "art").path).read_bytes()
    written_to: list[Path] = []

    def write_half_then_fail(self: pl.DataFrame, file: object, **kwargs: object) -> None:
        written_to.append(Path(str(file)))
        Path(str(file)).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        store.write(KEY, "art", frame_of("new"))
    monkeypatch.undo()

    # The write went to a hidden sibling, which is gone; the old file is untouched.
    (temporary,) = written_to
    assert temporary.parent == Path(store.folder(KEY).path)
    assert temporary.name.startswith(".art.parquet.") and temporary.name.endswith(".tmp")
    assert sorted(p.name for p in temporary.parent.iterdir()) == ["art.parquet"]
    assert Path(store.path(KEY, "art").path).read_bytes() == before


def test_failed_remote_serialization_writes_nothing(memory_base: str) -> None:
    store = AssetStore(memory_base)
    unwritable = pl.DataFrame({"o": [object()]}, schema={"o": pl.Object})
    with pytest.raises(Exception, match=r"(?i)object"):
        store.write(KEY, "art", unwritable)
    assert not store.exists(KEY, "art")
    assert store.partitions(KEY) == []


# --- checks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../../etc", "a/b", "Upper", ".hidden", "", "x\n"])
def test_bad_partition_keys_are_refused_before_any_write(store: AssetStore, bad: str) -> None:
    with pytest.raises(ValueError, match="cannot be stored as a file: keys must match"):
        store.write(KEY, bad, frame_of("x"))
    with pytest.raises(ValueError, match=r"of asset condor/raw_questions"):
        store.path(KEY, bad)
    assert store.partitions(KEY) == []
    assert not store.folder(KEY).exists()


@pytest.mark.parametrize(
    "key", [["condor", ".."], ["..", "x"], ["a..b"], ["condor", ""], ["a/b"], [".x"], ["-x"], []]
)
def test_bad_asset_key_parts_are_refused(store: AssetStore, key: list[str]) -> None:
    with pytest.raises(ValueError, match=r"asset key .* cannot be stored: .*each part must match"):
        store.path(key)
    with pytest.raises(ValueError, match="cannot be stored"):
        store.write(key, None, frame_of("x"))


def test_dot_dot_key_parts_say_they_would_leave_the_base(store: AssetStore) -> None:
    for key in [["..", "..", "etc"], "condor/../x", ["a..b"]]:
        with pytest.raises(ValueError, match=r"'\.\.' would lead outside the IO manager base"):
            store.path(key)


def test_str_key_with_bad_parts_is_refused(store: AssetStore) -> None:
    for key in ["condor//raw", "../raw", "/condor/raw", "condor/raw/"]:
        with pytest.raises(ValueError, match=r"offending parts"):
            store.path(key)


def test_path_through_a_link_out_of_the_base_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    base = tmp_path / "assets"
    base.mkdir()
    (base / "condor").symlink_to(outside, target_is_directory=True)
    store = AssetStore(str(base))
    with pytest.raises(ValueError, match=r"refusing to use .* outside the IO manager base"):
        store.write(KEY, "art", frame_of("art"))
    with pytest.raises(ValueError, match="outside the IO manager base"):
        store.read(KEY)
    assert list(outside.iterdir()) == []


def test_check_partition_key_accepts_tag_ids_only() -> None:
    assert check_partition_key("ai.ml_2-x") == "ai.ml_2-x"
    with pytest.raises(ValueError, match=r"'Ab' of asset condor/x cannot be stored"):
        check_partition_key("Ab", "condor/x")


# --- local files, environment ------------------------------------------------------------------
def test_local_files_lists_partition_files(tmp_path: Path) -> None:
    store = AssetStore(str(tmp_path))
    for tag in ["cooking", "art"]:
        store.write(KEY, tag, frame_of(tag))
    folder = tmp_path.resolve() / "condor" / "raw_questions"
    assert store.local_files(KEY) == [folder / "art.parquet", folder / "cooking.parquet"]
    assert store.local_files(["condor", "absent"]) == []


def test_local_files_on_a_remote_store_says_what_to_use(memory_base: str) -> None:
    with pytest.raises(ValueError, match=r"is not a local folder.*use scan\(\)"):
        AssetStore(memory_base).local_files(KEY)


def test_default_assets_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONDOR_ASSETS_DIR", raising=False)
    monkeypatch.setenv("CONDOR_DATA_DIR", str(tmp_path / "data"))
    assert default_assets_dir() == str(tmp_path / "data" / "assets")
    assert Path(store_from_env().base.path) == (tmp_path / "data" / "assets").resolve()

    monkeypatch.setenv("CONDOR_ASSETS_DIR", "memory://elsewhere/assets")
    assert default_assets_dir() == "memory://elsewhere/assets"
    assert not store_from_env().is_local
    assert Path(store_from_env(str(tmp_path / "given")).base.path) == (tmp_path / "given").resolve()
