"""ROUGE-L for AugCon, in Chinese and English: rouge-score's LCS with a tokenizer that segments
Chinese into words (jieba) and Western text into lowercased words.

rouge-score's own tokenizer keeps only [a-z0-9], so Chinese text would score as empty; a
custom tokenizer is its documented extension point. Used twice: the split check (precision of
each part against its parent: the paper's hallucination test) and the query filter (the
F-measure between two questions).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_JIEBA_LOCK = threading.Lock()


@dataclass(frozen=True)
class RougeL:
    """ROUGE-L of a candidate against a reference."""

    precision: float
    """LCS length over the candidate's tokens: how much of the candidate the reference holds."""
    recall: float
    """LCS length over the reference's tokens."""
    fmeasure: float


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens; runs of Chinese characters segmented into words by jieba."""
    return list(_tokens(text))


# The query filter compares each question with every kept one of its chunk: without the cache
# a question is tokenized once per comparison (jieba alone was a quarter of the filter's time).
@lru_cache(maxsize=65_536)
def _tokens(text: str) -> tuple[str, ...]:
    tokens: list[str] = []
    for word in _WORD.findall(text.casefold()):
        if _CJK.search(word):
            tokens.extend(t for t in _jieba_words(word) if t.strip())
        else:
            tokens.append(word)
    return tuple(tokens)


def _jieba_words(text: str) -> list[str]:
    import jieba

    with _JIEBA_LOCK:  # jieba builds its dictionary lazily on first use, not thread-safely
        return list(jieba.lcut(text, HMM=True))


class _Tokenizer:
    """What rouge-score's RougeScorer calls."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


@cache
def _scorer() -> Any:
    import logging

    import jieba
    from rouge_score import rouge_scorer

    jieba.setLogLevel(logging.WARNING)  # it prints its dictionary loading on stderr otherwise
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())


def rouge_l(candidate: str, reference: str) -> RougeL:
    """ROUGE-L of `candidate` against `reference`; an empty side scores 0."""
    score = _scorer().score(reference, candidate)["rougeL"]
    return RougeL(score.precision, score.recall, score.fmeasure)
