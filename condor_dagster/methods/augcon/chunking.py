"""Root contexts of AugCon's Context-Split-Tree: a document cut into chunks as AugCon does it.

Split on newlines, keep paragraphs longer than `min_paragraph_chars`, then cut each paragraph
into chunks of at most `max_chunk_chars` at sentence ends (Chinese and Western terminators).
A sentence longer than the limit on its own is cut at the limit, so no chunk exceeds it.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A sentence ends after one of these (with any closing quotes or brackets that follow).
_SENTENCE_END = re.compile(r"(?<=[.!?。！？；;…])[\"'”’」』）)\]]*\s*")


class ChunkSettings(BaseModel):
    """How documents become root contexts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_paragraph_chars: int = Field(default=100, ge=0)
    """Paragraphs of at most this many characters are left out (AugCon: 100)."""
    max_chunk_chars: int = Field(default=500, ge=20)
    """A chunk holds at most this many characters (AugCon: 500)."""

    @model_validator(mode="after")
    def _paragraph_fits(self) -> ChunkSettings:
        if self.min_paragraph_chars >= self.max_chunk_chars * 10:
            raise ValueError(
                f"min_paragraph_chars ({self.min_paragraph_chars}) must be well below "
                f"max_chunk_chars * 10 ({self.max_chunk_chars * 10}), or no paragraph is kept"
            )
        return self


def sentences(paragraph: str) -> list[str]:
    """`paragraph` cut after each sentence end; the pieces join back to the paragraph."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(paragraph):
        if match.end() > start:
            pieces.append(paragraph[start : match.end()])
            start = match.end()
    if start < len(paragraph):
        pieces.append(paragraph[start:])
    return pieces


def chunk_paragraph(paragraph: str, max_chars: int) -> list[str]:
    """Whole sentences packed greedily into chunks of at most `max_chars` characters."""
    chunks: list[str] = []
    current = ""
    for sentence in sentences(paragraph):
        while len(sentence) > max_chars:  # one sentence over the limit: cut it at the limit
            if current.strip():
                chunks.append(current.strip())
            current = ""
            chunks.append(sentence[:max_chars].strip())
            sentence = sentence[max_chars:]
        if len(current) + len(sentence) > max_chars and current.strip():
            chunks.append(current.strip())
            current = ""
        current += sentence
    if current.strip():
        chunks.append(current.strip())
    return [c for c in chunks if c]


def chunk_document(text: str, settings: ChunkSettings) -> list[str]:
    """The root contexts of one document, in document order."""
    paragraphs = [p.strip() for p in text.split("\n")]
    kept = [p for p in paragraphs if len(p) > settings.min_paragraph_chars]
    return [c for p in kept for c in chunk_paragraph(p, settings.max_chunk_chars)]
