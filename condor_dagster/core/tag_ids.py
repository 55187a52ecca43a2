"""Names and ids of World Knowledge Tree nodes.

Tag names come from users (seed YAML) and from LLMs (tree expansion), so they arrive with
numbering, bullets, quotes, zero-width characters and any script. This module turns a raw name
into a clean one (`normalize_name`), says whether it must be dropped (`name_problem`), gives the
key that deduplicates siblings (`sibling_key`), and builds the node id that Dagster uses as a
dynamic partition key (`node_id`).

An id is `<slug of the last name>.<8 hex of sha256 over the whole path>`: readable in the UI,
stable across processes and releases, and unique even when two paths slug alike ("C++" and "C#",
or "Pets" under two roots), because the hash covers the full path.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

PARTITION_KEY_PATTERN = re.compile(r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,63}\Z")
"""What every node id (and so every `tags` partition key) matches: 1-64 of [a-z0-9._-], starting
with a letter or digit, never "..". `\\Z`, not `$`, so a trailing newline cannot sneak through."""

SLUG_MAX_LEN = 40
NAME_MAX_LEN = 80
SENTENCE_MIN_WORDS = 13  # a tag of 13+ words is a sentence, not a topic name

# Joins path names for hashing; a character no real tag name contains (SYMBOL FOR UNIT SEPARATOR).
_PATH_SEPARATOR = "\u241f"
_HASH_HEX_CHARS = 8

# Zero-width joiners are part of emoji sequences and of Persian/Indic spelling: kept only when
# they join two non-ASCII characters. Every other format character (zero-width space, BOM,
# bidi marks, soft hyphen, ...) is invisible noise and is removed.
_JOINERS = frozenset("\u200c\u200d")
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")

# Bullets, markdown headers and list numbering an LLM or a pasted list puts before a name:
# "1. ", "2) ", "(3) ", "4、", "- ", "* ", "• ", "## ". "3.5 mm" keeps its number.
_LEADING_MARKER = re.compile(
    r"^(?:[-*•·‣◦▪▫●○■□►▶➤→–—]+|#{1,6}(?=\s)|\(?\d{1,3}[.)](?!\d)|\(\d{1,3}\)|\d{1,3}、)\s*"
)
# Punctuation that ends a list item rather than a name ("Pets.", "Pets:", "宠物。", "**Pets**").
_TRAILING_PUNCT = ".:;,。、，；：…*"
_LEADING_PUNCT = ":;,。、，；：*"
# Pairs that may wrap a whole name; removed only when they wrap all of it ("(a) and (b)" stays).
_WRAPPERS = {
    '"': '"',
    "'": "'",
    "`": "`",
    "“": "”",
    "„": "“",
    "‘": "’",
    "«": "»",
    "‹": "›",
    "「": "」",
    "『": "』",
    "《": "》",
    "〈": "〉",
    "【": "】",
    "〔": "〕",
    "〝": "〞",
    "(": ")",
    "[": "]",
    "{": "}",
}
# Double/CJK quotes are never part of a name at its edge, so an unpaired one is also removed.
# Single quotes are not in this set: "Parents'" ends with an apostrophe.
_LOOSE_QUOTES = frozenset('"“”„«»「」『』〝〞')
_CLOSER_TO_OPENER = {closer: opener for opener, closer in _WRAPPERS.items()}

# Characters that are common inside real names ("C++", "C#", "AT&T", "Node.js", "A/B testing",
# "E-commerce", "Rock 'n' roll") and so do not count as noise for the "garbage" rule.
_NAME_PUNCT = frozenset("-'’.&+#/")
# Chat-template control tokens leaking from a model's output.
_TEMPLATE_TOKENS = ("<|", "|>", "<s>", "</s>")

# Latin letters that NFKD does not decompose into ASCII.
_LATIN_EXTRA = {
    "ß": "ss",
    "æ": "ae",
    "œ": "oe",
    "ø": "o",
    "đ": "d",
    "ð": "d",
    "ł": "l",
    "þ": "th",
    "ı": "i",
    "ħ": "h",
    "ŧ": "t",
    "ŋ": "ng",
}


def normalize_name(raw: str) -> str:
    """A tag name as it should be stored: NFKC, invisible characters removed, whitespace
    collapsed, and list decoration (numbering, bullets, wrapping quotes/brackets, trailing
    ".:;,") stripped. Inner punctuation, slashes, CJK and emoji are kept.

    >>> normalize_name("  1. “Pets”. ")
    'Pets'
    """
    # Lone surrogates (bad decoding upstream) become U+FFFD, which name_problem rejects; they
    # would otherwise crash UTF-8 encoding when hashing or writing Parquet.
    text = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in raw)
    text = unicodedata.normalize("NFKC", text)
    text = _drop_invisible(text)
    text = " ".join(text.split())
    return _strip_decoration(text)


def name_problem(name: str, max_len: int = NAME_MAX_LEN) -> str | None:
    """Why `name` must be dropped, or None when it is a usable tag name.

    Rules, checked in this order (the name is normalized first, except for the line check):
    - "not_a_name": the raw text has a line break inside it (several items glued together, or
      prose);
    - "empty": nothing is left after `normalize_name` (whitespace, bullets, quotes only);
    - "too_long": more than `max_len` characters after normalizing;
    - "garbage": no letter of any script (only digits, punctuation, symbols or emoji), or a
      U+FFFD replacement character (broken decoding), or a chat-template token such as "<|" or
      "</s>", or more than half of the characters are noise, i.e. not letters, combining marks,
      digits, spaces or the punctuation common inside names (- ' . & + # /);
    - "not_a_name": more than 12 words (a sentence, not a topic).
    """
    if max_len < 1:
        raise ValueError(f"name_problem max_len must be at least 1, got {max_len}")
    # Checked on the raw text: normalizing turns line breaks into spaces. Surrounding ones
    # (a trailing newline) are harmless.
    if any(ch in _LINE_BREAKS for ch in name.strip()):
        return "not_a_name"
    text = normalize_name(name)
    if not text:
        return "empty"
    if len(text) > max_len:
        return "too_long"
    if _is_garbage(text):
        return "garbage"
    if len(text.split()) >= SENTENCE_MIN_WORDS:
        return "not_a_name"
    return None


def sibling_key(name: str) -> str:
    """The key under which two sibling names are the same tag: casefolded `normalize_name`, so
    "Pets", " pets." and "PETS" are one sibling."""
    return normalize_name(name).casefold()


def slugify(name: str) -> str:
    """A readable [a-z0-9-] form of `name`, at most 40 characters, never empty.

    Latin text is ASCII-folded ("Café" -> "cafe"). Runs in other scripts (CJK, Greek, Cyrillic,
    Arabic, emoji, ...) would vanish under ASCII folding, so each is encoded with punycode
    instead: the slug is still derived from the name. Ids add a hash, so slugs may collide.
    """
    pieces: list[str] = []  # ASCII text, "-" separators, and punycode of non-ASCII runs
    run: list[str] = []  # the non-ASCII run being collected

    def flush_run() -> None:
        if run:
            pieces.append("-" + "".join(run).encode("punycode").decode("ascii").lower() + "-")
            run.clear()

    for ch in normalize_name(name):
        if ch.isascii():
            flush_run()
            pieces.append(ch.lower() if ch.isalnum() else "-")
            continue
        folded = _fold_latin(ch)
        if folded:
            flush_run()
            pieces.append(folded)
        elif unicodedata.category(ch)[0] == "M":
            # A combining mark belongs to the non-ASCII letter before it (Devanagari vowel
            # signs, emoji variation selectors); after ASCII it is an accent already folded.
            if run:
                run.append(ch)
        elif unicodedata.category(ch)[0] in "PZ":
            flush_run()  # CJK/Unicode punctuation and spaces separate words
            pieces.append("-")
        else:
            run.append(ch)
    flush_run()
    slug = re.sub(r"[^a-z0-9]+", "-", "".join(pieces)).strip("-")
    if len(slug) > SLUG_MAX_LEN:
        cut = slug[: SLUG_MAX_LEN + 1].rfind("-")
        # Cut at a word boundary unless that would throw away more than half of the room.
        slug = slug[:cut] if cut >= SLUG_MAX_LEN // 2 else slug[:SLUG_MAX_LEN]
        slug = slug.strip("-")
    return slug or "tag"


def node_id(path: Sequence[str]) -> str:
    """The stable id of the node at `path` (names from the root to the node), e.g.
    "healthcare.1a2b3c4d". Names are compared as `sibling_key`s, so "Pets" and " pets." give
    the same id. Raises ValueError for an empty path or a name that normalizes to nothing."""
    if isinstance(path, str):
        raise ValueError(
            f"node_id expects a path (a list of names from the root), got the string {path!r}; "
            f"write node_id([{path!r}])"
        )
    names = [normalize_name(name) for name in path]
    if not names:
        raise ValueError("node_id got an empty path; give the names from the root to the node")
    for index, name in enumerate(names):
        if not name:
            raise ValueError(
                f"node_id path[{index}] ({path[index]!r}) is empty after normalization; "
                "drop names for which name_problem() returns a reason before building ids"
            )
    # Escaping makes the join injective even if a name contains the separator itself.
    keys = [
        name.casefold().replace("\\", "\\\\").replace(_PATH_SEPARATOR, "\\" + _PATH_SEPARATOR)
        for name in names
    ]
    digest = hashlib.sha256(_PATH_SEPARATOR.join(keys).encode("utf-8")).hexdigest()
    return f"{slugify(names[-1])}.{digest[:_HASH_HEX_CHARS]}"


def check_partition_key(key: str) -> str:
    """Return `key` if it is a valid tag partition key (see PARTITION_KEY_PATTERN), else raise
    ValueError naming it."""
    if not isinstance(key, str) or not PARTITION_KEY_PATTERN.match(key):
        raise ValueError(
            f"partition key {key!r} is not a tag id: expected 1-64 characters of [a-z0-9._-] "
            "starting with a letter or digit and without '..'; build keys with "
            "condor_dagster.core.tag_ids.node_id(path), never from raw tag names"
        )
    return key


def _drop_invisible(text: str) -> str:
    """Control characters: whitespace ones become spaces, others go. Format characters
    (zero-width, BOM, bidi marks) go, except joiners between two non-ASCII characters."""
    kept: list[str] = []
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cc":
            if ch.isspace():
                kept.append(" ")
        elif category != "Cf" or ch in _JOINERS:
            kept.append(ch)
    out: list[str] = []
    for index, ch in enumerate(kept):
        if ch in _JOINERS:
            before = kept[index - 1] if index > 0 else " "
            after = kept[index + 1] if index + 1 < len(kept) else " "
            if not all(_joinable(c) for c in (before, after)):
                continue
        out.append(ch)
    return "".join(out)


def _joinable(ch: str) -> bool:
    return not ch.isascii() and not ch.isspace() and ch not in _JOINERS


def _strip_decoration(text: str) -> str:
    """Strip numbering, bullets, wrapping quotes/brackets and end punctuation until stable."""
    while True:
        before = text
        text = _LEADING_MARKER.sub("", text).strip()
        text = text.rstrip(_TRAILING_PUNCT).lstrip(_LEADING_PUNCT).strip()
        text = _unwrap(text).strip()
        if text and text[0] in _LOOSE_QUOTES and _WRAPPERS.get(text[0], "") not in text[1:]:
            text = text[1:].strip()
        if text and text[-1] in _LOOSE_QUOTES:
            opener = _CLOSER_TO_OPENER.get(text[-1], text[-1])
            if opener not in text[:-1]:
                text = text[:-1].strip()
        if text == before:
            return text


def _unwrap(text: str) -> str:
    """`text` without a quote/bracket pair that wraps all of it."""
    if len(text) < 2 or text[0] not in _WRAPPERS or text[-1] != _WRAPPERS[text[0]]:
        return text
    opener, closer, inner = text[0], text[-1], text[1:-1]
    if opener == closer:
        return text if opener in inner else inner
    depth = 0
    for ch in inner:
        if ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth < 0:  # the first opener closes inside: "(a) and (b)"
                return text
    return inner if depth == 0 else text


def _is_garbage(text: str) -> bool:
    if "\ufffd" in text or any(token in text for token in _TEMPLATE_TOKENS):
        return True
    categories = [unicodedata.category(ch) for ch in text]
    if not any(category[0] == "L" for category in categories):
        return True
    noise = sum(
        1
        for ch, category in zip(text, categories, strict=True)
        if category[0] not in "LMN" and category != "Zs" and ch not in _NAME_PUNCT
    )
    return noise * 2 > len(text)


def _fold_latin(ch: str) -> str:
    """The ASCII form of a Latin letter ("é" -> "e", "ß" -> "ss"); "" when there is none."""
    lower = ch.lower()
    if lower in _LATIN_EXTRA:
        return _LATIN_EXTRA[lower]
    decomposed = unicodedata.normalize("NFKD", ch)
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    return folded if folded and folded.isascii() else ""
