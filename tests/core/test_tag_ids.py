"""Tag names and node ids: normalization, drop reasons, slugs, and ids safe as partition keys."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from condor_dagster.core.tag_ids import (
    PARTITION_KEY_PATTERN,
    check_partition_key,
    name_problem,
    node_id,
    normalize_name,
    sibling_key,
    slugify,
)

# --- normalize_name ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1. Pets", "Pets"),
        ("  “Pets”. ", "Pets"),
        ("- Pets", "Pets"),
        ("* Pets", "Pets"),
        ("• Pets", "Pets"),
        ("2) Pets", "Pets"),
        ("(3) Pets", "Pets"),
        ("4、宠物", "宠物"),
        ("## Pets", "Pets"),
        ("**Pets**", "Pets"),
        ('"Pets"', "Pets"),
        ("'Pets'", "Pets"),
        ("(Pets)", "Pets"),
        ("【宠物】", "宠物"),
        ('"Pets', "Pets"),  # unpaired quote of a truncated LLM answer
        ("Pets:", "Pets"),
        ("Pets;", "Pets"),
        ("Pets,", "Pets"),
        ("宠物。", "宠物"),
        ("Pets\u200b", "Pets"),  # zero-width space
        ("P\u200bets", "Pets"),
        ("\ufeffPets", "Pets"),  # byte order mark
        ("Pe\u200dts", "Pets"),  # a joiner between ASCII letters joins nothing
        ("Pets\x00\x07", "Pets"),  # control characters
        ("Cats\t\n  and   dogs", "Cats and dogs"),
        ("Ｐｅｔｓ", "Pets"),  # NFKC: full-width letters
        ("Cats\u00a0/\u3000Dogs", "Cats / Dogs"),  # NFKC: no-break and ideographic spaces
    ],
)
def test_normalize_name_strips_list_decoration(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize(
    "kept",
    [
        "Cats / Dogs",
        "Cats, dogs and birds",
        "人工智能",
        "Pets 🐶",
        "C++",
        "C#",
        ".NET",
        "Node.js",
        "3.5 mm audio",  # a leading decimal number is not list numbering
        "Pets (dogs)",
        "(a) and (b)",  # brackets that do not wrap the whole name stay
        "Parents'",  # a trailing apostrophe is part of the word
        "Rock 'n' roll",
        "AT&T",
        "اللغة العربية",
        "👨\u200d👩\u200d👧 families",  # the joiner inside an emoji sequence stays
        "می\u200cخواهم",  # ZWNJ inside Persian spelling stays
    ],
)
def test_normalize_name_keeps_inner_punctuation_and_scripts(kept: str) -> None:
    assert normalize_name(kept) == kept


def test_normalize_name_is_idempotent() -> None:
    for raw in ["  1. “Pets”. ", "**Pets**:", "- 【宠物】。", "((Pets))", "Pets\u200b\u200b."]:
        once = normalize_name(raw)
        assert normalize_name(once) == once
    assert normalize_name("((Pets))") == "Pets"


# --- name_problem ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("   \t  ", "empty"),
        ("1.", "empty"),
        ("“”", "empty"),
        ("\u200b\u200b", "empty"),
        ("x" * 81, "too_long"),
        ("x" * 10_000, "too_long"),
        ("2024", "garbage"),
        ("!!!???", "garbage"),
        ("🐶🐱", "garbage"),
        ("Pe\ufffdts", "garbage"),
        ("Pets\ud800", "garbage"),  # a lone surrogate from broken decoding
        ("<|im_end|>", "garbage"),
        ("a{}[]<>=$%", "garbage"),
        ("Pets\nCats", "not_a_name"),
        ("Pets\r\nCats", "not_a_name"),
        ("This is a long sentence that an expansion model wrote instead of a tag", "not_a_name"),
        ("Thirteen words is one too many for a tag name in this case", "not_a_name"),
    ],
)
def test_name_problem_reason_codes(name: str, problem: str) -> None:
    assert name_problem(name) == problem


@pytest.mark.parametrize(
    "name",
    [
        "Pets",
        "  Pets.\n",  # surrounding whitespace and newline are just trimmed
        "x" * 80,
        "人工智能",
        "C++",
        "C/C++",
        "A/B testing",
        "E-commerce",
        "Pets 🐶",
        "Ελληνική ιστορία",
        "Русская литература",
        "اللغة العربية",
        "हिन्दी साहित्य",
        "Twelve words is still fine for a tag name in this case",
    ],
)
def test_name_problem_accepts_real_names(name: str) -> None:
    assert name_problem(name) is None


def test_name_problem_max_len_is_configurable() -> None:
    assert name_problem("Healthcare", max_len=5) == "too_long"
    assert name_problem("Pets", max_len=4) is None
    with pytest.raises(ValueError, match="max_len"):
        name_problem("Pets", max_len=0)


# --- sibling_key -------------------------------------------------------------------------------


def test_sibling_key_merges_case_and_decoration() -> None:
    assert sibling_key("Pets") == sibling_key(" pets.") == sibling_key("1. PETS") == "pets"
    assert sibling_key("Straße") == sibling_key("STRASSE")  # casefold, not lower
    assert sibling_key("E-commerce") != sibling_key("E commerce")
    assert sibling_key("Cats") != sibling_key("Dogs")


# --- slugify -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Healthcare", "healthcare"),
        ("Marriage and Relationships", "marriage-and-relationships"),
        ("Café au lait", "cafe-au-lait"),
        ("Straße", "strasse"),
        ("Cats / Dogs", "cats-dogs"),
        ("../../etc", "etc"),
        ("C++", "c"),
        ("", "tag"),
        ("!!!", "tag"),
    ],
)
def test_slugify_examples(name: str, slug: str) -> None:
    assert slugify(name) == slug


@pytest.mark.parametrize(
    "name", ["人工智能", "宠物", "Ελληνικά", "Русский", "العربية", "🐶", "हिन्दी"]
)
def test_slugify_keeps_non_latin_names_distinct(name: str) -> None:
    slug = slugify(name)
    assert slug != "tag"
    assert slug == name.encode("punycode").decode("ascii").lower()
    assert PARTITION_KEY_PATTERN.match(slug)


def test_slugify_mixes_scripts_and_separates_words() -> None:
    slug = slugify("AI 人工智能")
    assert slug.startswith("ai-")
    assert slugify("人工智能") in slug
    assert slugify("人工智能") != slugify("机器学习")


def test_slugify_truncates_at_a_word_boundary() -> None:
    slug = slugify("Agriculture and Rural Development in Mountainous Regions")
    assert len(slug) <= 40
    assert slug == "agriculture-and-rural-development-in"
    long_word = slugify("x" * 10_000)
    assert long_word == "x" * 40


# --- node_id -----------------------------------------------------------------------------------


def test_node_id_shape() -> None:
    key = node_id(["Healthcare"])
    slug, digest = key.split(".")
    assert slug == "healthcare"
    assert len(digest) == 8 and int(digest, 16) >= 0
    assert node_id(["Healthcare", "Nutrition"]).startswith("nutrition.")


def test_node_id_same_tag_written_differently() -> None:
    assert node_id(["Pets"]) == node_id([" pets."]) == node_id(["1. PETS"])
    assert node_id(["Healthcare", "Pets"]) == node_id(["healthcare", "“Pets”"])


def test_node_id_slug_collisions_are_resolved_by_the_hash() -> None:
    cpp, csharp = node_id(["Technology", "C++"]), node_id(["Technology", "C#"])
    assert cpp.split(".")[0] == csharp.split(".")[0] == "c"
    assert cpp != csharp
    # The same name under two roots is two nodes.
    assert node_id(["Pets"]) != node_id(["Healthcare", "Pets"])
    assert node_id(["Home", "Pets"]) != node_id(["Healthcare", "Pets"])
    # Names that differ only by punctuation slug alike but are different siblings.
    assert slugify("E-commerce") == slugify("E commerce")
    assert node_id(["E-commerce"]) != node_id(["E commerce"])


def test_node_id_hash_covers_the_path_structure() -> None:
    # Joining with a separator must not make ["a b", "c"] and ["a", "b c"] the same path.
    assert node_id(["a b", "c"]) != node_id(["a", "b c"])
    assert node_id(["a\u241fb"]) != node_id(["a", "b"])


@pytest.mark.parametrize(
    "name",
    [
        "../../etc",
        "a,b|c/d",
        "a...b",
        "x" * 10_000,
        "   spaced   out   ",
        "人工智能",
        "🐶🐱",
        "اللغة العربية",
        "Cats / Dogs, birds",
    ],
)
def test_node_id_is_a_safe_partition_key(name: str) -> None:
    key = node_id(["Root", name])
    assert PARTITION_KEY_PATTERN.match(key), key
    for forbidden in (",", "|", "/", "..", " "):
        assert forbidden not in key
    assert check_partition_key(key) == key


def test_node_id_rejects_bad_paths() -> None:
    with pytest.raises(ValueError, match="empty path"):
        node_id([])
    with pytest.raises(ValueError, match=r"path\[1\]"):
        node_id(["Pets", "  “” "])
    with pytest.raises(ValueError, match=r"node_id\(\['Pets'\]\)"):
        node_id("Pets")


def test_node_ids_are_stable_across_processes() -> None:
    paths = [["Healthcare"], ["Healthcare", "Nutrition"], ["人工智能", "大模型"], ["Pets", "🐶"]]
    here = [node_id(path) for path in paths]
    script = (
        "import json, sys\n"
        "from condor_dagster.core.tag_ids import node_id\n"
        "print(json.dumps([node_id(p) for p in json.loads(sys.argv[1])]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(out.stdout) == here
    # Pinned values: a change here renames every partition of existing deployments.
    assert here[0] == "healthcare.3d804971"
    assert here[1] == "nutrition.bd39382b"


def _generated_names(count: int) -> list[str]:
    """Varied names from a fixed seed: words, punctuation, scripts, emoji and random code points."""
    rng = random.Random(20250122)
    parts = [
        "Pets", "C++", "C#", "../", "..", "...", ",", "|", "/", " ", "\t", "\u200b", "“", "”",
        "人工智能", "宠物", "🐶", "👨\u200d👩\u200d👧", "Ελληνικά", "Русский", "العربية", "हिन्दी",
        "Café", "Straße", "1. ", "- ", "#", "%", "\ufffd", "\u0301", "x" * 50,
    ]  # fmt: skip
    names = []
    for _ in range(count):
        pieces = rng.choices(parts, k=rng.randint(1, 6))
        pieces += [chr(rng.randint(0x20, 0x2FFFF)) for _ in range(rng.randint(0, 4))]
        rng.shuffle(pieces)
        names.append("".join(pieces))
    return names


def test_every_generated_name_gives_a_valid_unique_id() -> None:
    names = [name for name in _generated_names(600) if normalize_name(name)]
    assert len(names) > 500
    ids: dict[str, str] = {}
    for name in names:
        key = node_id(["Root", name])
        assert PARTITION_KEY_PATTERN.match(key), (name, key)
        assert not any(bad in key for bad in (",", "|", "/", "..", " "))
        check_partition_key(key)
        assert node_id(["Root", normalize_name(name)]) == key  # normalizing is id-neutral
        ids.setdefault(key, sibling_key(name))
        assert ids[key] == sibling_key(name), f"{name!r} collides with another name on {key}"


# --- check_partition_key -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "Pets", "pets/cats", "a,b", "a|b", "a..b", ".pets", "-pets", "pets\n", "x" * 65, 42],
)
def test_check_partition_key_rejects_and_names_the_key(key: object) -> None:
    with pytest.raises(ValueError, match="node_id") as err:
        check_partition_key(key)  # type: ignore[arg-type]
    assert repr(key) in str(err.value)


def test_check_partition_key_accepts_ids() -> None:
    assert check_partition_key("healthcare.1a2b3c4d") == "healthcare.1a2b3c4d"
    assert check_partition_key("x" * 64) == "x" * 64
