"""AugCon's chunking: paragraphs over 100 characters, chunks of at most 500 at sentence ends."""

import pytest

from condor_dagster.methods.augcon.chunking import (
    ChunkSettings,
    chunk_document,
    chunk_paragraph,
    sentences,
)

EN = "APT resolves dependencies before it installs a package. " * 12
ZH = "软件包管理系统会在安装之前检查依赖关系。它还会下载所需的文件！" * 20


def test_short_paragraphs_are_left_out_and_order_kept() -> None:
    text = "Title\n\n" + "A" * 101 + ".\nshort line\n" + "B" * 150 + "."
    chunks = chunk_document(text, ChunkSettings())
    assert chunks == ["A" * 101 + ".", "B" * 150 + "."]


@pytest.mark.parametrize("paragraph", [EN, ZH])
def test_chunks_end_at_sentences_and_fit(paragraph: str) -> None:
    chunks = chunk_paragraph(paragraph, 500)
    assert len(chunks) > 1
    assert all(len(c) <= 500 for c in chunks)
    assert all(c[-1] in ".。！" for c in chunks)
    # Nothing lost but the whitespace between chunks.
    assert "".join(chunks).replace(" ", "") == paragraph.replace(" ", "")


def test_sentences_rejoin_and_split_on_chinese_terminators() -> None:
    text = "第一句。第二句！Third one? Fourth."
    assert "".join(sentences(text)) == text
    assert len(sentences(text)) == 4


def test_a_sentence_over_the_limit_is_cut_at_the_limit() -> None:
    chunks = chunk_paragraph("x" * 1200, 500)
    assert [len(c) for c in chunks] == [500, 500, 200]


def test_settings_are_configurable_and_validated() -> None:
    text = "Short sentence one. Short sentence two. Short sentence three."
    assert chunk_document(text, ChunkSettings(min_paragraph_chars=10, max_chunk_chars=40)) == [
        "Short sentence one. Short sentence two.",
        "Short sentence three.",
    ]
    with pytest.raises(ValueError, match="max_chunk_chars"):
        ChunkSettings(max_chunk_chars=5)
    with pytest.raises(ValueError, match="min_paragraph_chars"):
        ChunkSettings(min_paragraph_chars=5000, max_chunk_chars=100)
