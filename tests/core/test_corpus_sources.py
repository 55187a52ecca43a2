"""Corpus sources and shards: every format, drop reasons, ids, keys and discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN
from condor_dagster.methods.corpus.demo import DEFAULT_PAGES, HANDBOOK_DIR, install_demo_corpus
from condor_dagster.methods.corpus.records import DocumentRow
from condor_dagster.methods.corpus.shards import discover, read_shard, shard_key_base
from condor_dagster.methods.corpus.sources import (
    detect_language,
    normalize_text,
    path_language,
    read_documents,
)

needs_handbook = pytest.mark.skipif(
    not HANDBOOK_DIR.is_dir(), reason="debian-handbook not installed (make setup)"
)


def read(
    path: Path,
    source: str | None = None,
    *,
    text_field: str = "article",
    start: int = 0,
    stop: int | None = None,
) -> list[DocumentRow]:
    return read_documents(
        path, source=source or path.name, shard="s", text_field=text_field, start=start, stop=stop
    )


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- JSONL ---------------------------------------------------------------------------------------
def test_jsonl_records_malformed_lines_and_unicode(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "news.jsonl",
        [
            json.dumps({"article": "  First line.  \n\n  Second line. ", "title": "One"}),
            "",
            "{not json",
            json.dumps({"body": "no article field"}),
            json.dumps(
                {"article": "北京是中国的首都。数据 🚀 <b>bold</b> &amp; more", "language": "zh_CN"}
            ),
            "   ",
            json.dumps({"article": "   \n\t "}),
            json.dumps(["a", "list"]),
            json.dumps({"article": 42}),
        ],
    )
    rows = read(path)
    assert [r.position for r in rows] == list(range(7))  # blank lines are not documents
    first, bad_json, no_field, cjk, blank, a_list, number = rows
    assert first.text == "First line.\nSecond line."
    assert (first.title, first.drop_reason, first.chars) == ("One", None, len(first.text))
    assert bad_json.drop_reason == "malformed_document"
    assert bad_json.detail is not None and bad_json.detail.startswith("line 3: not JSON")
    assert no_field.drop_reason == "malformed_document"
    assert no_field.detail is not None and "line 4: no string field 'article'" in no_field.detail
    assert cjk.text == "北京是中国的首都。数据 🚀 <b>bold</b> &amp; more"  # JSON text kept as is
    assert (cjk.language, cjk.drop_reason) == ("zh-cn", None)
    assert (blank.drop_reason, blank.text) == ("empty_text", "")
    assert a_list.detail == "line 8: a JSON list, not an object"
    assert number.detail is not None and number.detail.startswith("line 9: no string field")
    assert all(r.text == "" for r in rows if r.drop_reason)


def test_jsonl_text_field_and_undecodable_and_surrogate_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b'{"body": "plain"}\n{"body": "caf\xe9"}\n{"body": "lone \\ud800 surrogate"}\n'
    )
    ok, latin1, surrogate = read(path, text_field="body")
    assert (ok.text, ok.drop_reason) == ("plain", None)
    assert latin1.drop_reason == "undecodable_text"
    assert latin1.detail == "line 2: byte 13 is not UTF-8"
    assert surrogate.drop_reason == "undecodable_text"
    assert surrogate.detail is not None and "line 3" in surrogate.detail


def test_jsonl_shard_range(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "r.jsonl", [json.dumps({"article": f"doc {i}"}) for i in range(7)]
    )
    rows = read(path, start=2, stop=5)
    assert [(r.position, r.text) for r in rows] == [(2, "doc 2"), (3, "doc 3"), (4, "doc 4")]


# ---- Parquet and saved datasets -----------------------------------------------------------------
def test_parquet_rows_nulls_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = pa.table({"article": ["Hello world.", None, "你好，世界。这是中文。"], "n": [1, 2, 3]})
    pq.write_table(table, path)
    hello, null, chinese = read(path)
    assert (hello.text, hello.language) == ("Hello world.", "en")
    assert null.drop_reason == "malformed_document"
    assert null.detail == "row 1: field 'article' is null, not a string"
    assert chinese.language == "zh"
    with pytest.raises(ValueError, match=r"no column 'body'.*\['article', 'n'\].*text_field"):
        read(path, text_field="body")


def test_unreadable_parquet_is_one_malformed_row(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    (row,) = read(path)
    assert row.drop_reason == "malformed_document"
    assert row.detail is not None and row.detail.startswith("not a readable Parquet file")
    shards = discover(tmp_path, docs_per_shard=10).shards
    assert [(s.key, s.start, s.stop) for s in shards] == [("broken.parquet.000", 0, 1)]


def test_hf_save_to_disk_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "corpus" / "wiki_ds"
    texts = [f"Article number {i}." for i in range(5)]
    datasets.Dataset.from_dict(
        {"article": texts, "title": [f"T{i}" for i in range(5)]}
    ).save_to_disk(str(folder))
    rows = read(folder, "wiki_ds")
    assert [r.text for r in rows] == texts
    assert rows[0].title == "T0"
    found = discover(tmp_path / "corpus", docs_per_shard=2)
    assert [(s.key, s.source, s.start, s.stop) for s in found.shards] == [
        ("wiki_ds.000", "wiki_ds", 0, 2),
        ("wiki_ds.001", "wiki_ds", 2, 4),
        ("wiki_ds.002", "wiki_ds", 4, 5),
    ]
    assert found.ignored == []  # the dataset's own files are not listed
    second = read_shard(tmp_path / "corpus", found.shards[1], text_field="article")
    assert [r.position for r in second] == [2, 3]
    with pytest.raises(ValueError, match="no column 'body'"):
        read(folder, "wiki_ds", text_field="body")


# ---- text and HTML ------------------------------------------------------------------------------
def test_text_markdown_and_non_utf8(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("\ufeff  Line one.\r\n\r\n   Line two.  \n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# The Title\n\nBody text.\n", encoding="utf-8")
    (tmp_path / "c.txt").write_bytes(b"good start \xff\xfe bad")
    (tmp_path / "d.txt").write_text(" \n\t\n", encoding="utf-8")
    (a,) = read(tmp_path / "a.txt")
    (b,) = read(tmp_path / "b.md")
    (c,) = read(tmp_path / "c.txt")
    (d,) = read(tmp_path / "d.txt")
    assert (a.text, a.position, a.title) == ("Line one.\nLine two.", 0, None)
    assert (b.title, b.text) == ("The Title", "# The Title\nBody text.")
    assert c.drop_reason == "undecodable_text"
    assert c.detail is not None and c.detail.startswith("byte 11 is not UTF-8")
    assert (d.drop_reason, d.text, d.chars) == ("empty_text", "", 0)


def test_html_without_text_is_empty(tmp_path: Path) -> None:
    (tmp_path / "e.html").write_text("<html><head><title>T</title></head><body></body></html>")
    (tmp_path / "z.html").write_bytes(b"")
    (empty,) = read(tmp_path / "e.html")
    (zero,) = read(tmp_path / "z.html")
    assert (empty.drop_reason, empty.title) == ("empty_text", "T")
    assert zero.drop_reason == "empty_text"


@needs_handbook
def test_handbook_pages_en_and_zh() -> None:
    en_page = HANDBOOK_DIR / "en-US" / "sect.apt-get.html"
    zh_page = HANDBOOK_DIR / "zh-CN" / "sect.apt-get.html"
    (en,) = read(en_page, "en-US/sect.apt-get.html")
    (zh,) = read(zh_page, "zh-CN/sect.apt-get.html")
    assert en.language == "en-us" and zh.language == "zh-cn"
    assert en.title == "6.2. aptitude, apt-get, and apt Commands"
    assert "APT is a vast project, whose original plans included a graphical interface." in en.text
    assert "APT 是个原先有图形接口的大计划。" in zh.text
    for row in (en, zh):
        lines = set(row.text.splitlines())
        # The page's navigation bars (Prev / Up / Home / Next, the banner) are left out.
        assert not lines & {"Prev", "Next", "Up", "Home", "Download the ebook"}
        assert "Download the ebook" not in row.text
        assert "The Debian Administrator's Handbook" not in row.text
        assert "\n\n" not in row.text and all(ln == ln.strip() for ln in row.text.splitlines())
        assert row.drop_reason is None and row.chars > 5000


@needs_handbook
def test_demo_pages_sizes(tmp_path: Path) -> None:
    copied = install_demo_corpus(tmp_path, pages=DEFAULT_PAGES)
    assert len(copied) == 3
    for path in copied:
        (row,) = read(path, path.relative_to(tmp_path).as_posix())
        assert 1500 <= row.chars <= 4000, (path, row.chars)
    with pytest.raises(FileNotFoundError, match="apt-get install debian-handbook"):
        install_demo_corpus(tmp_path, pages=DEFAULT_PAGES, handbook=tmp_path / "nope")


# ---- ids, language, normalization ---------------------------------------------------------------
def test_ids_stable_and_content_addressed(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "i.jsonl", [json.dumps({"article": t}) for t in ("same", "same", "other")]
    )
    first, second = read(path), read(path)
    assert [r.id for r in first] == [r.id for r in second]
    assert len({r.id for r in first}) == 3  # equal text at another position is another doc
    assert all(r.id.startswith("d-") for r in first)
    (tmp_path / "i.jsonl").write_text(json.dumps({"article": "changed"}) + "\n")
    assert read(path)[0].id != first[0].id


def test_language_and_normalization_rules() -> None:
    assert detect_language("纯中文的句子，没有英文。") == "zh"
    assert detect_language("Mostly English with 一点 Chinese") == "en"
    assert detect_language("") == "en"
    assert path_language("en-US/page.html") == "en-us"
    assert path_language("docs/zh_CN/intro/page.html") == "zh-cn"
    assert path_language("my-db/page.html") is None
    assert path_language("en-US.html") is None  # only folders name a language
    assert normalize_text("  a\u0301  \n\n\u3000b\u3000\r\n") == "\u00e1\nb"


# ---- shard keys ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "names",
    [
        ["中文.html", "日本語.html", "한국어.html"],
        ["🚀 launch.md", "🎉 launch.md"],
        ["a, b.txt", "a; b.txt", "a b.txt"],
        ["x" * 80 + ".txt", "x" * 80 + "y.txt"],
        ["-a.txt", "_a.txt", "a.txt", "a..b.txt"],
    ],
)
def test_shard_keys_valid_and_distinct(tmp_path: Path, names: list[str]) -> None:
    for name in names:
        (tmp_path / name).write_text("text", encoding="utf-8")
    keys = [s.key for s in discover(tmp_path, docs_per_shard=5).shards]
    assert len(keys) == len(names) == len(set(keys))
    assert all(PARTITION_KEY_PATTERN.match(k) for k in keys), keys


def test_shard_key_rules() -> None:
    assert shard_key_base("en-US/sect.apt-get.html") == "en-us.sect.apt-get.html"
    assert shard_key_base("notes/2024_q1.md") == "notes.2024_q1.md"
    spaced = shard_key_base("My Notes/Day 1.txt")
    assert (
        spaced.startswith("my-notes.day-1.txt-") and len(spaced) == len("my-notes.day-1.txt-") + 8
    )
    assert shard_key_base("My Notes/Day 1.txt") == spaced  # stable
    long = shard_key_base("deep/" * 20 + "file.jsonl", reserve=4)
    assert len(long) + 4 <= 64 and PARTITION_KEY_PATTERN.match(long + ".000")


def test_colliding_sources_both_hashed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.txt").write_text("one")
    (tmp_path / "a.b.txt").write_text("two")
    keys = {s.source: s.key for s in discover(tmp_path, docs_per_shard=5).shards}
    assert keys["a/b.txt"] != keys["a.b.txt"]
    assert all(k.startswith("a.b.txt-") for k in keys.values())


# ---- discovery ----------------------------------------------------------------------------------
def test_discovery_order_splitting_and_ignored(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", [json.dumps({"article": f"d{i}"}) for i in range(5)] + [""])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("text")
    (tmp_path / "sub" / "logo.png").write_bytes(b"\x89PNG")
    (tmp_path / "style.css").write_text("body {}")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.txt").write_text("no")
    (tmp_path / ".notes.txt").write_text("no")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    found = discover(tmp_path, docs_per_shard=2)
    assert [(s.key, s.source, s.start, s.stop) for s in found.shards] == [
        ("b.jsonl.000", "b.jsonl", 0, 2),
        ("b.jsonl.001", "b.jsonl", 2, 4),
        ("b.jsonl.002", "b.jsonl", 4, 5),
        ("sub.a.txt", "sub/a.txt", 0, 1),
    ]
    assert found.ignored == ["style.css", "sub/logo.png"]
    assert found.empty == ["empty.jsonl"]
    assert discover(tmp_path, docs_per_shard=2) == found  # deterministic
    rows = read_shard(tmp_path, found.shards[2], text_field="article")
    assert [(r.shard, r.position, r.text) for r in rows] == [("b.jsonl.002", 4, "d4")]
    one = discover(tmp_path, docs_per_shard=100).shards[0]
    assert (one.key, one.stop) == ("b.jsonl.000", 5)  # a single shard keeps its suffix


def test_single_file_root(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "only.jsonl", [json.dumps({"article": "x"})] * 3)
    found = discover(path, docs_per_shard=2)
    assert [s.key for s in found.shards] == ["only.jsonl.000", "only.jsonl.001"]
    assert [r.position for r in read_shard(path, found.shards[1], text_field="article")] == [2]


def test_empty_and_missing_root(tmp_path: Path) -> None:
    assert discover(tmp_path, docs_per_shard=3).shards == []
    with pytest.raises(FileNotFoundError, match=r"nope does not exist.*CONDOR_CORPUS_DIR.*`path`"):
        discover(tmp_path / "nope", docs_per_shard=3)
    with pytest.raises(ValueError, match="docs_per_shard must be at least 1"):
        discover(tmp_path, docs_per_shard=0)
