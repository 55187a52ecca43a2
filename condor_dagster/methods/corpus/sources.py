"""Reading the documents of one corpus source (pure: no dagster).

A source is a JSONL file (one JSON object per line), a Parquet file, a Hugging Face dataset
saved with `save_to_disk` (a folder of Arrow IPC streams), a `.txt` / `.md` file or an `.html`
/ `.htm` page (one document each). Every document becomes a `DocumentRow`: a record without
usable text keeps its place with a drop reason and a detail, so no document is lost silently.
Only a setting that cannot fit the data (a Parquet file without the `text_field` column) raises.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from condor_dagster.core.drop_reasons import DropReason
from condor_dagster.core.rows import content_id
from condor_dagster.methods.corpus.records import DocumentRow

SourceKind = Literal["jsonl", "parquet", "hf_dataset", "text", "html"]

SUFFIX_KINDS: dict[str, SourceKind] = {
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".txt": "text",
    ".md": "text",
    ".html": "html",
    ".htm": "html",
}
# Sources holding many documents: split into shards of docs_per_shard; the others hold one.
COLLECTION_KINDS: frozenset[SourceKind] = frozenset({"jsonl", "parquet", "hf_dataset"})
HF_MARKERS = ("state.json", "dataset_info.json")

# Above this share of CJK ideographs among the letters, undeclared text is Chinese.
CJK_SHARE = 0.3
_CJK_RANGES = (
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2FA1F),
)
# A folder named like a locale ("en-US", "zh-CN", "zh-Hans", "pt_BR", "es-419"). The canonical
# casing is required so that folders like "my-db" or "api-v2" are not read as languages.
_LOCALE_DIR = re.compile(r"^[a-z]{2,3}[-_](?:[A-Z]{2}|[A-Z][a-z]{3}|\d{3})$")


def is_hf_dataset(path: Path) -> bool:
    """A folder written by `datasets.Dataset.save_to_disk` (state.json + dataset_info.json)."""
    return path.is_dir() and all((path / marker).is_file() for marker in HF_MARKERS)


def source_kind(path: Path) -> SourceKind | None:
    """The kind of source at `path`, or None when it is not one (images, CSS, scripts...)."""
    if path.is_dir():
        return "hf_dataset" if is_hf_dataset(path) else None
    return SUFFIX_KINDS.get(path.suffix.lower())


def count_documents(path: Path, kind: SourceKind) -> int:
    """Documents in a source, counted cheaply: non-blank JSONL lines, Parquet metadata rows,
    dataset record-batch rows; 1 for a one-document file. A collection that cannot be opened
    counts 1: its reader turns it into one malformed_document row, so it shows in the data."""
    if kind == "jsonl":
        with path.open("rb") as lines:
            return sum(1 for line in lines if line.strip())
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowInvalid, OSError):
            return 1
    if kind == "hf_dataset":
        try:
            return sum(batch.num_rows for batch in _arrow_batches(path))
        except _UnreadableDataset:
            return 1
    return 1


def read_documents(
    path: Path,
    *,
    source: str,
    shard: str,
    text_field: str,
    start: int = 0,
    stop: int | None = None,
) -> list[DocumentRow]:
    """The documents at positions [start, stop) of the source at `path` (`source`: its path
    relative to the corpus root, which names it in ids, rows and messages)."""
    kind = source_kind(path)
    if kind is None:
        raise ValueError(
            f"{path} is not a corpus source: expected one of {sorted(SUFFIX_KINDS)} or a folder "
            "written by datasets' save_to_disk"
        )
    end = stop if stop is not None else 1 << 62
    raws: Iterator[_Raw]
    if kind == "jsonl":
        raws = _jsonl(path, text_field=text_field, start=start, stop=end)
    elif kind == "parquet":
        raws = _parquet(path, text_field=text_field, start=start, stop=end)
    elif kind == "hf_dataset":
        raws = _hf_dataset(path, text_field=text_field, start=start, stop=end)
    elif kind == "html":
        raws = iter([_html(path.read_bytes())])
    else:
        raws = iter([_plain_text(path.read_bytes(), markdown=path.suffix.lower() == ".md")])
    return [to_row(raw, source=source, shard=shard) for raw in raws]


# ---- normalization and language ----------------------------------------------------------------
def normalize_text(text: str) -> str:
    """NFC, each line stripped, empty lines dropped: paragraphs end up separated by one "\\n"."""
    lines = (line.strip() for line in unicodedata.normalize("NFC", text).splitlines())
    return "\n".join(line for line in lines if line)


def detect_language(text: str) -> str:
    """ "zh" when more than 30% of the letters are CJK ideographs, else "en"."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "en"
    cjk = sum(1 for ch in letters if any(lo <= ord(ch) <= hi for lo, hi in _CJK_RANGES))
    return "zh" if cjk > CJK_SHARE * len(letters) else "en"


def path_language(source: str) -> str | None:
    """The innermost locale-named folder of `source` ("en-US/a.html" -> "en-us"), or None."""
    for part in reversed(Path(source).parts[:-1]):
        if _LOCALE_DIR.match(part):
            return part.lower().replace("_", "-")
    return None


def language_code(value: str) -> str:
    """A declared language as stored: stripped, lowercased, "_" -> "-" ("zh_CN" -> "zh-cn")."""
    return value.strip().lower().replace("_", "-")


# ---- the raw documents of each format ---------------------------------------------------------
@dataclass(frozen=True)
class _Raw:
    """A document as read, before normalization; `where` locates it in messages ("line 7")."""

    position: int
    text: str
    where: str | None = None
    title: str | None = None
    language: str | None = None
    drop_reason: DropReason | None = None
    detail: str | None = None


def to_row(raw: _Raw, *, source: str, shard: str) -> DocumentRow:
    """The DocumentRow of a raw document: text normalized, drop reason and language decided."""
    prefix = f"{raw.where}: " if raw.where else ""
    reason, detail, text = raw.drop_reason, raw.detail, ""
    if reason is None:
        surrogate = _surrogate_at(raw.text)
        if surrogate is not None:
            # A lone surrogate (from a JSON "\ud800" escape) cannot be written as UTF-8.
            reason = "undecodable_text"
            detail = f"{prefix}character {surrogate} is a lone UTF-16 surrogate, not text"
        else:
            text = normalize_text(raw.text)
            if not text:
                reason = "empty_text"
                detail = raw.detail or f"{prefix}no text after whitespace normalization"
    if raw.language and raw.language.strip():
        language = language_code(raw.language)
    else:
        language = path_language(source) or detect_language(text)
    return DocumentRow(
        id=content_id("d", source, raw.position, text),
        shard=shard,
        source=source,
        position=raw.position,
        title=_clean_title(raw.title),
        text=text,
        language=language,
        chars=len(text),
        drop_reason=reason,
        detail=detail,
    )


def _jsonl(path: Path, *, text_field: str, start: int, stop: int) -> Iterator[_Raw]:
    position = 0  # positions count non-blank lines, as count_documents does
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if position >= stop:
                return
            if position >= start:
                yield _jsonl_record(line, number=number, position=position, field=text_field)
            position += 1


def _jsonl_record(line: bytes, *, number: int, position: int, field: str) -> _Raw:
    where = f"line {number}"
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return _dropped(position, "undecodable_text", f"{where}: byte {error.start} is not UTF-8")
    try:
        record = json.loads(decoded)
    except json.JSONDecodeError as error:
        detail = f"{where}: not JSON ({error.msg} at column {error.colno})"
        return _dropped(position, "malformed_document", detail)
    if not isinstance(record, dict):
        detail = f"{where}: a JSON {type(record).__name__}, not an object"
        return _dropped(position, "malformed_document", detail)
    text = record.get(field)
    if not isinstance(text, str):
        fields = ", ".join(repr(k) for k in list(record)[:10])
        detail = f"{where}: no string field {field!r} (fields: {fields}; set text_field)"
        return _dropped(position, "malformed_document", detail)
    return _from_record(record, position=position, text=text, where=where)


def _parquet(path: Path, *, text_field: str, start: int, stop: int) -> Iterator[_Raw]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        if start == 0:
            yield _dropped(0, "malformed_document", f"not a readable Parquet file: {error}")
        return
    names = list(file.schema_arrow.names)
    _require_column(path, names, text_field)
    columns = [name for name in (text_field, "title", "language") if name in names]
    table = file.read(columns=columns)
    rows = table.slice(start, max(0, min(stop, table.num_rows) - start)).to_pylist()
    for offset, row in enumerate(rows):
        yield _table_record(row, position=start + offset, field=text_field)


class _UnreadableDataset(Exception):
    """A save_to_disk folder whose state.json or Arrow files cannot be read."""


def _arrow_batches(path: Path) -> Iterator[Any]:
    """The record batches of a save_to_disk folder, in the order state.json lists its files."""
    import pyarrow as pa

    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        files = [path / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _UnreadableDataset(f"state.json has no readable _data_files list: {error}") from error
    for file in files:
        try:
            reader = pa.ipc.open_stream(pa.memory_map(str(file)))
        except (pa.ArrowInvalid, OSError) as error:
            raise _UnreadableDataset(f"{file.name} is not an Arrow stream: {error}") from error
        yield from reader


def _hf_dataset(path: Path, *, text_field: str, start: int, stop: int) -> Iterator[_Raw]:
    offset = 0
    try:
        for batch in _arrow_batches(path):
            _require_column(path, list(batch.schema.names), text_field)
            if offset + batch.num_rows > start and offset < stop:
                lo, hi = max(start - offset, 0), min(stop - offset, batch.num_rows)
                columns = [n for n in (text_field, "title", "language") if n in batch.schema.names]
                rows = batch.select(columns).slice(lo, hi - lo).to_pylist()
                for index, row in enumerate(rows):
                    yield _table_record(row, position=offset + lo + index, field=text_field)
            offset += batch.num_rows
            if offset >= stop:
                return
    except _UnreadableDataset as error:
        if start == 0:
            yield _dropped(0, "malformed_document", f"not a readable saved dataset: {error}")


def _require_column(path: Path, names: list[str], field: str) -> None:
    if field not in names:
        raise ValueError(
            f"{path} has no column {field!r} (its columns: {names}); set the corpus resource's "
            "text_field to the column that holds the document text"
        )


def _table_record(row: dict[str, Any], *, position: int, field: str) -> _Raw:
    where = f"row {position}"
    value = row.get(field)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as error:
            detail = f"{where}: byte {error.start} of {field!r} is not UTF-8"
            return _dropped(position, "undecodable_text", detail)
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        detail = f"{where}: field {field!r} is {kind}, not a string"
        return _dropped(position, "malformed_document", detail)
    return _from_record(row, position=position, text=value, where=where)


def _plain_text(data: bytes, *, markdown: bool) -> _Raw:
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        detail = f"byte {error.start} is not UTF-8 ({error.reason}); save the file as UTF-8"
        return _dropped(0, "undecodable_text", detail)
    title = None
    if markdown:
        heading = next((ln for ln in text.splitlines() if ln.startswith("# ")), None)
        title = heading[2:] if heading else None
    return _Raw(position=0, text=text, title=title)


def _html(data: bytes) -> _Raw:
    import trafilatura

    if not data.strip():
        return _dropped(0, "empty_text", "empty file")
    # load_html honours the page's declared charset; the tree is read for <title> first
    # because extraction prunes it.
    tree = trafilatura.load_html(data)
    if tree is None:
        return _dropped(0, "malformed_document", "not an HTML document (no element tree)")
    title = tree.findtext(".//title")
    # favor_recall keeps short paragraphs and code/list blocks of documentation pages; the
    # handbook's navigation (Prev / Up / Home / Next) is still left out.
    document = trafilatura.bare_extraction(
        tree,
        with_metadata=True,
        include_comments=False,
        include_tables=True,
        favor_recall=True,
    )
    text = getattr(document, "text", None) or ""
    if not title or not title.strip():
        title = getattr(document, "title", None)
    if not normalize_text(text):
        return _Raw(position=0, text="", title=title, detail="no extractable text in the page")
    return _Raw(position=0, text=text, title=title)


def _dropped(position: int, reason: DropReason, detail: str) -> _Raw:
    return _Raw(position=position, text="", drop_reason=reason, detail=detail)


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _from_record(record: Mapping[str, Any], *, position: int, text: str, where: str) -> _Raw:
    """A record's text with its optional `title` and `language` fields (JSONL, Parquet, HF)."""
    return _Raw(
        position=position,
        text=text,
        where=where,
        title=_optional_str(record.get("title")),
        language=_optional_str(record.get("language")),
    )


def _clean_title(title: str | None) -> str | None:
    if title is None:
        return None
    # Titles are one line; a stray surrogate becomes U+FFFD rather than failing the write.
    cleaned = " ".join(unicodedata.normalize("NFC", title).split())
    cleaned = cleaned.encode("utf-8", "replace").decode("utf-8")
    return cleaned or None


def _surrogate_at(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None
