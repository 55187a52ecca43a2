"""The record the corpus stage writes: one row per document of a source, usable or dropped."""

from __future__ import annotations

from pydantic import BaseModel

from condor_dagster.core.drop_reasons import DropReason


class DocumentRow(BaseModel):
    """One document of the corpus; the Parquet schema of corpus/documents."""

    id: str
    """Stable content id, `content_id("d", source, position, text)`: equal bytes give equal ids
    across runs and machines."""
    shard: str
    """The corpus_shards partition key the document belongs to."""
    source: str
    """Path of the source relative to the corpus root, posix style ("en-US/intro.html")."""
    position: int
    """Index of the document inside its source (line among non-blank JSONL lines, Parquet or
    dataset row); 0 for one-document files."""
    title: str | None
    """The HTML <title> (else trafilatura's title), a Markdown "# " heading, or the record's
    `title` field; None when there is none."""
    text: str
    """The extracted text: NFC, each line stripped, empty lines dropped, paragraphs separated by
    "\\n"; "" for a dropped document without text."""
    language: str
    """Lowercased BCP-47-style code: the record's `language` field, else a path component like
    "en-US" / "zh-CN" ("en-us", "zh-cn"), else detected ("zh" when over 30% of letters are
    CJK, otherwise "en")."""
    chars: int
    """Characters of `text`."""
    drop_reason: DropReason | None
    """malformed_document, undecodable_text or empty_text; None for a usable document."""
    detail: str | None
    """What was wrong, e.g. "line 7: not JSON"; None for a usable document."""
