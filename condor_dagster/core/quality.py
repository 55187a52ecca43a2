"""Quality gates for what a real small model gets wrong, shared by every stage.

One vocabulary of drop reasons (`QualityProblem`) and small pure functions, each rule explained
in its docstring. The word lists and regexes live in `quality_patterns.py`. Language codes:
any code starting with "zh" is Chinese (`core/language.py`).

Each gate errs on the side of keeping: a gate that drops real questions or answers costs more
than the bad items it catches, so a rule fires only on a clear signal.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from functools import cache

from condor_dagster.core import quality_patterns as patterns
from condor_dagster.core.drop_reasons import QUALITY_PROBLEMS as QUALITY_PROBLEMS
from condor_dagster.core.drop_reasons import DropReason, QualityProblem
from condor_dagster.core.prompts import LANGUAGES, load_prompt
from condor_dagster.core.tag_ids import normalize_name

MAX_REPEATS = 5  # Kun's rule: a unit repeated more than 5 times in a row is degenerate
_MIN_ANSWER_WORDS = 3  # what follows a cut preamble must be at least this long to be an answer
_MAX_UNIT_TOKENS = 24  # longer units are caught sentence by sentence
_CHAR_RUN = 20  # a symbol or digit repeated this often in a row ("；；；…", "1111…")
# Markdown rules and fences repeat these on purpose ("------", "======", "```").
_MARKDOWN_RUN_CHARS = frozenset("-=_*#~`. \t\n|+")
_PERIODIC = re.compile(r"(\S{2,12}?)\1{5,}")  # "FanFanFanFanFanFan" inside one word
_ECHO_WORDS = 6  # a run of this many system-prompt words in an answer is an echo
_ECHO_CJK = 8  # ... or this many CJK characters

# CJK ideographs, kana and hangul: one token per character (no spaces between words).
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af])")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_SENTENCE_END = re.compile(r"[.!?。！？…\n]+")
_MARKUP_ECHO = re.compile(r"^\W*\[\s*(?:easy|medium|hard)\b", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\[[a-z][a-z' ]{1,30}\](?!\()")
_HTML_TAG = re.compile(r"</?[a-z][a-z0-9]*(?:\s[^<>]{0,80})?/?>")
_CLAUSE_END = re.compile(r"[.!?;:,\n。！？；：，]+|\s[-–—]\s")

# Template words that only an echo of the tree prompt puts in a tag name ("Sub-topics",
# "Noun phrase"); ordinary words of the prompt ("English", "training") are not among them.
_TEMPLATE_TERMS = frozenset({"sub", "subtopic", "topic", "taxonomy", "noun", "phrase", "json"})
_ECHO_ALONE = frozenset({"topic", "subtopic"})  # a one-word name that is only an echo
_ZH_TEMPLATE_TERMS = ("子主题", "分类路径", "分类体系", "标签名称", "中文短语", "当前路径")
_STOPWORDS = frozenset({"a", "an", "the", "of", "and", "or", "for", "in", "on", "to", "with"})


def tokens(text: str) -> list[str]:
    """Casefolded words of `text`; each CJK character is a word of its own."""
    spaced = _CJK.sub(r" \1 ", unicodedata.normalize("NFKC", text).casefold())
    return _WORD.findall(spaced)


def _stem(token: str) -> str:
    # Plural-insensitive ("Paths" ~ "path"); applied to both sides of every comparison.
    plural = len(token) > 3 and token.endswith("s") and not token.endswith("ss")
    return token[:-1] if plural else token


def _name_key(name: str) -> tuple[str, ...]:
    return tuple(_stem(t) for t in tokens(normalize_name(name).replace("&", " and ")))


def tree_name_problem(
    name: str, ancestors: Sequence[str], prompt_text: str
) -> QualityProblem | None:
    """Why a proposed child tag `name` (under `ancestors`, root first) must be dropped, given
    the `prompt_text` that asked for it; None when it may be a tag.

    Names are compared as casefolded words (punctuation ignored, "&" read as "and", plural "s"
    ignored; each CJK character a word):
    - "repeats_ancestor": the name equals an ancestor ("Marriage and Relationships" under
      itself), also with a number after it ("Entertainment Gossip_1"), or it is a path
      ("A > B") one of whose parts equals an ancestor;
    - "echoes_instructions", with the ancestors' names cut out of the prompt first:
      (a) the name is a run of the prompt's own words, at least 2 Latin words or 3 CJK
      characters ("List 2 distinct, more specific sub-topics of", "tag names", "子主题");
      (b) it contains a template term (sub, topic, subtopic, taxonomy, noun, phrase, json, or
      子主题, 分类路径, ...) and every other word comes from the prompt or the ancestors
      ("Taxonomy Paths", "Pets sub-topics"); a one-word name only when it is "topic(s)" or
      "subtopic(s)". Ordinary prompt words alone ("English Training") do not make an echo.
    """
    key = _name_key(name)
    if not key:
        return None
    ancestor_keys = {_name_key(a) for a in ancestors}
    # "Entertainment Gossip_1" under "Entertainment Gossip": a numbered copy is a repeat.
    unnumbered = key
    while len(unnumbered) > 1 and unnumbered[-1].isdigit():
        unnumbered = unnumbered[:-1]
    if unnumbered in ancestor_keys:
        return "repeats_ancestor"
    parts = [p for p in re.split(r"\s*[>›»]\s*", name) if p.strip()]
    in_path = len(parts) > 1 and any(_name_key(p) in ancestor_keys for p in parts)
    if key in ancestor_keys or in_path:
        return "repeats_ancestor"

    instructions = prompt_text
    for ancestor in sorted(ancestors, key=len, reverse=True):
        if ancestor.strip():
            instructions = re.sub(re.escape(ancestor), " | ", instructions, flags=re.IGNORECASE)
    prompt_key = tuple(_stem(t) for t in tokens(instructions))
    cjk = sum(1 for t in key if _CJK.fullmatch(t))
    long_enough = cjk >= 3 if cjk == len(key) else len(key) - cjk >= 2
    if long_enough and _contains_run(prompt_key, key):
        return "echoes_instructions"

    if any(term in normalize_name(name) for term in _ZH_TEMPLATE_TERMS):
        return "echoes_instructions"
    content = [t for t in key if t not in _STOPWORDS and not t.isdigit()]
    known = set(prompt_key) | {t for k in ancestor_keys for t in k}
    if len(content) == 1:
        return "echoes_instructions" if content[0] in _ECHO_ALONE else None
    if content and any(t in _TEMPLATE_TERMS for t in content) and all(t in known for t in content):
        return "echoes_instructions"
    return None


def _contains_run(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    width = len(needle)
    return any(haystack[i : i + width] == needle for i in range(len(haystack) - width + 1))


def repetition_problem(text: str, *, letters_only: bool = True) -> QualityProblem | None:
    """ "degenerate_repetition" when a unit is repeated more than 5 times in a row (Kun's rule),
    else None. Units, casefolded:
    - 1 to 24 consecutive words (a CJK character is a word): "very good" six times;
    - a sentence or line, compared whole ("Your answer is perfect." eight times, "### +"
      lines);
    - 2 to 12 characters inside a word ("FantasyFanFanFanFanFanFan");
    - a symbol or digit repeated 20 times in a row ("；；；；…", "1111…"), except the
      characters Markdown repeats on purpose (- = _ * # ~ ` . |).
    With `letters_only` (the default, for prose) a word or in-word unit must contain a letter,
    so "0, 0, 0, 0, 0, 0" in code and numbered lists do not count; tag names pass False.
    """
    words = tokens(text)
    for width in range(1, _MAX_UNIT_TOKENS + 1):
        run = 0
        for i in range(len(words) - width):
            run = run + 1 if words[i] == words[i + width] else 0
            # `run` matches at period `width` mean (run + width) // width copies of the unit.
            if run >= MAX_REPEATS * width:
                unit = words[i + 1 - run : i + 1 - run + width]
                if not letters_only or any(c.isalpha() for w in unit for c in w):
                    return "degenerate_repetition"
    lines = [" ".join(s.split()).casefold() for s in _SENTENCE_END.split(text)]
    lines = [line for line in lines if line.strip(".,;:!?- ")]
    run = 1
    for before, after in itertools.pairwise(lines):
        run = run + 1 if before == after else 1
        if run > MAX_REPEATS:
            return "degenerate_repetition"
    folded = text.casefold()
    for match in _PERIODIC.finditer(folded):
        if not letters_only or any(c.isalpha() for c in match.group(1)):
            return "degenerate_repetition"
    run = 1
    for before, after in itertools.pairwise(folded):
        run = run + 1 if before == after and not before.isalpha() else 1
        if run >= _CHAR_RUN and before not in _MARKDOWN_RUN_CHARS:
            return "degenerate_repetition"
    return None


_CJK_CHAR = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def question_problem(text: str, language: str) -> QualityProblem | None:
    """Why a generated question cannot go on to the answer stage, or None.

    - "degenerate_repetition": see `repetition_problem`;
    - "echoes_instructions": it opens with the prompt's own markup ("[Easy", "[Medium",
      "[Hard"), as "[Easy, Question: 什么？" did;
    - "unfilled_placeholder": a template slot left in it, a bracketed lowercase word not
      followed by a link target ("[industry]", "[favorite hobby]"; "[x]" and "[QM]" are not
      slots);
    - "not_a_question": fewer than 3 words and 4 CJK characters ("complete", "words": too short
      to ask anything), or the text neither asks nor requests anything. It asks when it has a
      question mark ("?" or "？"); or a sentence or clause opens with an interrogative word
      (what, how, why, can, is, do, ...) or an imperative verb (write, list, explain, describe,
      compare, give, imagine, suggest, act, plan, ...: Condor's creation and format-control
      tasks are requests); or it has an asking phrase anywhere (I'd like, help me, can you,
      please, any tips); or a Chinese asking word or request verb anywhere (吗 呢 什么 怎么
      如何 为什么 哪 谁 是否 多少 请 写 描述 解释 ...).
    Both languages' rules apply to every row whatever its `language`: a small model often
    answers a Chinese prompt in English, and such a question is still a question.
    """
    del language  # both rule sets always apply (see above); kept for a uniform gate signature
    if not text.strip():
        return "not_a_question"
    if repetition_problem(text):
        return "degenerate_repetition"
    if _MARKUP_ECHO.match(text):
        return "echoes_instructions"
    if _PLACEHOLDER.search(text):
        return "unfilled_placeholder"
    if len(text.split()) < 3 and len(_CJK_CHAR.findall(text)) < 4:
        return "not_a_question"
    if "?" in text or "？" in text or patterns.CHINESE_ASKING.search(text):
        return None
    # HTML tags ("<p>Give ...") are markup around the request, not its first word.
    folded = _HTML_TAG.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    if patterns.ASKING_PHRASES.search(folded):
        return None
    for clause in _CLAUSE_END.split(folded):
        words = clause.split()
        first = words[0].strip("\"'“”‘’*#>()[]-_`") if words else ""
        if first in patterns.INTERROGATIVE_WORDS or first in patterns.IMPERATIVE_WORDS:
            return None
    return "not_a_question"


def refusal_problem(text: str) -> QualityProblem | None:
    """ "refusal" for an AI disclaimer ("As an AI", "作为一个人工智能") or a stated inability
    ("I cannot help", "I'm unable to provide", "我无法回答") anywhere, or an apology that opens
    the text ("I'm sorry, ...", "I apologize", "抱歉，", "对不起，"); an opening "I'm sorry to
    hear that" is empathy and stays."""
    if patterns.REFUSAL.search(text) or patterns.APOLOGY_OPENING.search(text):
        return "refusal"
    return None


def answer_problem(text: str, language: str) -> QualityProblem | None:
    """Why an answer cannot be a training sample: "refusal" (`refusal_problem`), then
    "degenerate_repetition" (`repetition_problem`), then "echoes_instructions" (it repeats
    the answer prompt's system text, 6 words or 8 CJK characters in a row of it, as
    "你是一个乐于助人、知识渊博的助手；；；" did); None otherwise. Rules are the same for every
    language (both languages' patterns and system prompts apply to every text)."""
    del language  # the patterns cover both languages; kept for a uniform gate signature
    return refusal_problem(text) or repetition_problem(text) or _system_echo(text)


@cache
def _system_runs() -> tuple[frozenset[tuple[str, ...]], frozenset[tuple[str, ...]]]:
    """Every run of _ECHO_WORDS Latin words and of _ECHO_CJK CJK characters of the answer and
    refine prompts' system texts (both languages)."""
    latin: set[tuple[str, ...]] = set()
    cjk: set[tuple[str, ...]] = set()
    for name in ("shared/answer", "shared/refine"):
        for language in LANGUAGES:
            words = tokens(load_prompt(name, language).system)
            for width, runs in ((_ECHO_WORDS, latin), (_ECHO_CJK, cjk)):
                for i in range(len(words) - width + 1):
                    run = tuple(words[i : i + width])
                    if (width == _ECHO_CJK) == all(_CJK.fullmatch(w) for w in run):
                        runs.add(run)
    return frozenset(latin), frozenset(cjk)


def _system_echo(text: str) -> QualityProblem | None:
    words = tokens(text)
    latin, cjk = _system_runs()
    for width, runs in ((_ECHO_WORDS, latin), (_ECHO_CJK, cjk)):
        if any(tuple(words[i : i + width]) in runs for i in range(len(words) - width + 1)):
            return "echoes_instructions"
    return None


def strip_meta_preamble(text: str, language: str) -> tuple[str, str | None, QualityProblem | None]:
    """(answer, stripped_preamble, problem) for a rewrite that may talk about itself.

    Leading sentences that talk about the rewrite instead of being it are cut, one after the
    other: "Sure!", "Here's a rewritten version of your answer ...:", "Thank you for the
    feedback.", "Based on your feedback, ...:", "Improved answer:", "好的！", "以下是改进后的
    回答：", "我根据您的反馈修改了回答：", "感谢您的反馈。". The cut text comes back as
    `stripped_preamble` (None when nothing was cut) so the row stays auditable.
    `problem` is "meta_commentary" when a preamble was cut and what is left is no answer:
    under 3 words (CJK characters count as words), or a first sentence still about the
    feedback ("your answer", "the feedback", "你的回答", "您的反馈", ...).
    """
    del language  # the patterns cover both languages
    rest = text
    cut: list[str] = []
    while rest:
        match = patterns.META_SENTENCE.match(rest)
        if not match or not match.group(0).strip():
            break
        cut.append(match.group(0).strip())
        rest = rest[match.end() :]
    if not cut:
        return text, None, None
    answer = rest.strip()
    preamble = " ".join(cut)
    first_sentence = _SENTENCE_END.split(answer, maxsplit=1)[0] if answer else ""
    if len(tokens(answer)) < _MIN_ANSWER_WORDS or patterns.META_REFERENCES.search(first_sentence):
        return text, preamble, "meta_commentary"
    return answer, preamble, None


def answer_drop_reason(
    answer: str | None, truncated: bool, finish_reason: str | None, *, language: str = "en"
) -> DropReason | None:
    """Why an answer cannot be a training sample, or None: rejected, empty_answer, truncated,
    then the shared quality gates, the same for every variant: refusal,
    degenerate_repetition (`answer_problem`) and meta_commentary (an answer that is only talk
    about a rewrite, `strip_meta_preamble`)."""
    if finish_reason == "rejected":
        return "rejected"
    if answer is None or not answer.strip():
        return "empty_answer"
    if truncated:
        return "truncated"
    problem = answer_problem(answer, language)
    if problem is None:
        problem = strip_meta_preamble(answer, language)[2]
    return problem
