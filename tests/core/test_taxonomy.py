"""Seed taxonomy YAML: the packaged default, the file format, its error messages, TreeNodes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN, node_id, sibling_key
from condor_dagster.methods.condor.taxonomy import (
    SeedNode,
    SeedRoot,
    TreeNode,
    default_taxonomy_path,
    load_taxonomy,
    parse_taxonomy,
    seed_nodes,
)

# The 45 root domains of the Condor sample, in the order of SEED-FACTS.md.
CONDOR_ROOTS = [
    "Marriage and Relationships", "Entertainment Gossip", "Artificial Intelligence",
    "Healthcare", "Pets", "Environment", "Technology", "Education and Training",
    "Career Development", "Finance and Investment", "Real Estate and Home Living",
    "Travel and Adventure", "Food and Cooking", "Culture and Arts", "Sports and Fitness",
    "Military and National Defense", "Social Welfare", "Automotive and Transportation",
    "E-commerce", "Gaming and Animation", "Infant and Child Education", "Senior Life",
    "Psychological Counseling", "Religion and Belief", "Agriculture and Rural Development",
    "Urban Planning", "Laws and Regulations", "Art", "Marketing", "Astronomy and Geography",
    "Education and Exams", "Cybersecurity", "Fashion and Trends", "Mental Health",
    "Agricultural Technology", "Digital Products", "Home Decoration", "History and Culture",
    "Travel Guides", "Food Sharing", "Film and Entertainment", "Sports Activities",
    "Entrepreneurship and Investment", "Music and Dance", "National Defense and Military",
]  # fmt: skip

EXAMPLE = """\
version: 1
language: en
roots:
  - name: Healthcare
    children:
      - name: Nutrition
        children: [Vitamins, "Diet planning"]
  - Pets
  - name: 人工智能
    language: zh
    custom: [Large language models]
"""


def write(tmp_path: Path, text: str, name: str = "taxonomy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> tuple[str, Path]:
    """The ValueError message of loading `text` from a file, and that file."""
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        load_taxonomy(path)
    return str(err.value), path


# --- the packaged default ----------------------------------------------------------------------


def test_default_taxonomy_has_the_45_condor_roots_in_english_and_chinese() -> None:
    path = default_taxonomy_path()
    assert path.is_file()
    roots = load_taxonomy(path)
    english = [root for root in roots if root.language == "en"]
    chinese = [root for root in roots if root.language == "zh"]
    assert [root.name for root in english] == CONDOR_ROOTS
    assert len(chinese) == 45
    assert len(roots) == 90
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in root.name) for root in chinese)
    assert len({sibling_key(root.name) for root in chinese}) == 45
    assert {"人工智能", "宠物", "医疗健康", "婚恋情感", "娱乐八卦"} <= {r.name for r in chinese}
    # The paper's near-duplicates are kept as two roots.
    assert "Military and National Defense" in CONDOR_ROOTS
    assert "National Defense and Military" in CONDOR_ROOTS


def test_default_taxonomy_nodes_have_unique_valid_ids() -> None:
    nodes = seed_nodes(load_taxonomy(default_taxonomy_path()))
    assert len(nodes) == 90
    assert len({node.node_id for node in nodes}) == 90
    assert all(PARTITION_KEY_PATTERN.match(node.node_id) for node in nodes)
    assert all(node.level == 0 and node.parent_id is None and node.is_leaf for node in nodes)
    assert all(node.source == "seed" for node in nodes)
    assert nodes[3].node_id.startswith("healthcare.")


# --- the format --------------------------------------------------------------------------------


def test_example_file_becomes_tree_nodes(tmp_path: Path) -> None:
    nodes = {node.path_text: node for node in seed_nodes(load_taxonomy(write(tmp_path, EXAMPLE)))}
    assert list(nodes) == [
        "Healthcare",
        "Healthcare > Nutrition",
        "Healthcare > Nutrition > Vitamins",
        "Healthcare > Nutrition > Diet planning",
        "Pets",
        "人工智能",
        "人工智能 > Large language models",
    ]
    vitamins = nodes["Healthcare > Nutrition > Vitamins"]
    assert vitamins.level == 2
    assert vitamins.path == ["Healthcare", "Nutrition", "Vitamins"]
    assert vitamins.parent_id == nodes["Healthcare > Nutrition"].node_id
    assert nodes["Healthcare > Nutrition"].parent_id == nodes["Healthcare"].node_id
    assert vitamins.node_id == node_id(["Healthcare", "Nutrition", "Vitamins"])
    assert vitamins.is_leaf and vitamins.source == "seed" and vitamins.language == "en"
    assert not nodes["Healthcare"].is_leaf and not nodes["Healthcare > Nutrition"].is_leaf
    assert nodes["Pets"].is_leaf and nodes["Pets"].level == 0

    custom = nodes["人工智能 > Large language models"]
    assert custom.source == "custom"
    assert custom.language == "zh"  # inherited from its root
    assert custom.level == 1 and custom.is_leaf
    assert custom.parent_id == nodes["人工智能"].node_id
    assert not nodes["人工智能"].is_leaf  # custom tags are its children


def test_plain_string_and_mapping_forms_are_the_same_root() -> None:
    plain = parse_taxonomy("roots: [Pets]")
    mapping = parse_taxonomy("roots:\n  - name: Pets\n")
    assert plain == mapping
    assert plain == [SeedRoot(name="Pets", language="en")]


def test_user_file_may_hold_several_levels() -> None:
    text = """\
roots:
  - name: Technology
    children:
      - name: Programming languages
        children:
          - name: Systems languages
            children: ["C++", "C#", Rust]
            custom: [Zig]
"""
    nodes = {node.name: node for node in seed_nodes(parse_taxonomy(text))}
    assert nodes["Rust"].level == 3
    assert nodes["Rust"].path_text == (
        "Technology > Programming languages > Systems languages > Rust"
    )
    assert nodes["C++"].node_id != nodes["C#"].node_id  # both slug to "c"
    assert nodes["Zig"].source == "custom" and nodes["Zig"].level == 3
    assert [nodes[n].is_leaf for n in ("Technology", "Systems languages", "Rust")] == [
        False,
        False,
        True,
    ]


def test_names_are_normalized_and_language_defaults_apply() -> None:
    roots = parse_taxonomy('language: zh\nroots: ["1. 宠物。", {name: " Pets ", language: en}]')
    assert [(root.name, root.language) for root in roots] == [("宠物", "zh"), ("Pets", "en")]
    assert parse_taxonomy("roots: [Pets]")[0].language == "en"  # no `language:` means en


def test_nested_language_applies_to_its_subtree() -> None:
    text = "roots:\n  - name: Languages\n    children:\n      - {name: 中文, language: zh,"
    text += " children: [成语]}\n      - English\n"
    nodes = {node.name: node.language for node in seed_nodes(parse_taxonomy(text))}
    assert nodes == {"Languages": "en", "中文": "zh", "成语": "zh", "English": "en"}


def test_load_taxonomy_accepts_str_paths(tmp_path: Path) -> None:
    assert load_taxonomy(str(write(tmp_path, EXAMPLE)))[1].name == "Pets"


# --- error messages ----------------------------------------------------------------------------


def test_missing_file_names_the_path_and_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ValueError) as err:
        load_taxonomy(missing)
    message = str(err.value)
    assert str(missing) in message
    assert "point knowledge_tree's taxonomy_path at an existing YAML file" in message
    with pytest.raises(ValueError, match="is a directory"):
        load_taxonomy(tmp_path)


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "version: 1\nroots:\n  - Pets\n  - [unclosed\n  - x: y\n")
    assert str(path) in message
    assert "not valid YAML" in message
    assert "line 5" in message


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "roots: [Pets]\nroots: [Cats]\n")
    assert str(path) in message and "duplicate key 'roots'" in message and "line 2" in message


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("roots: [Café]".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_taxonomy(path)


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "version: 1\n", "roots:\n", "roots: []"]
)
def test_no_roots(tmp_path: Path, text: str) -> None:
    message, path = load_error(tmp_path, text)
    assert message == f"taxonomy {path} has no roots; add a `roots:` list"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("roots:\n  Pets: 1\n", "roots must be a list"),
        ("- Pets\n", "top level must be a mapping"),
        ("roots: [Pets, Cats, 42]", "roots[2]: expected a name"),
        ("roots: [Pets, Cats, 42]", "a number (42)"),
        ("roots:\n  - name: A\n    children: [B, 7]\n", "roots[0].children[1]: expected a name"),
        ("roots: [yes]", "a boolean"),
        ("roots:\n  - name: 42\n", "roots[0].name: a name must be text"),
        ("roots:\n  - name: A\n    children: B\n", "roots[0].children: must be a list"),
        ("roots:\n  - name: A\n    custom: [{name: B}]\n", "roots[0].custom[0]: a name must"),
        ("roots:\n  - language: zh\n", "roots[0]: has no `name:`"),
        ("roots:\n  - name: A\n    language: 5\n", "roots[0].language must be a language"),
        ("roots:\n  - name: A\n    language: zh_CN\n", "language 'zh_CN' is not a language"),
        ("language: english\nroots: [A]\n", "language: language 'english'"),
    ],
)
def test_wrong_types_name_where(tmp_path: Path, text: str, expected: str) -> None:
    message, path = load_error(tmp_path, text)
    assert f"taxonomy {path}" in message
    assert expected in message


@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        ("roots: [Pets]\nlanguages: en\n", "languages", "the top level"),
        ("roots:\n  - name: A\n    childs: [B]\n", "childs", "roots[0]"),
        (
            "roots:\n  - name: A\n    children:\n      - {name: B, tags: [C]}\n",
            "tags",
            "children[0]",
        ),
    ],
)
def test_unknown_keys_are_rejected_by_name(tmp_path: Path, text: str, key: str, where: str) -> None:
    message, _ = load_error(tmp_path, text)
    assert f"unknown key {key!r}" in message
    assert where in message


def test_shorthand_mapping_gets_a_hint(tmp_path: Path) -> None:
    message, _ = load_error(tmp_path, "roots:\n  - Healthcare:\n      - Nutrition\n")
    assert "unknown key 'Healthcare'" in message
    assert "name: Healthcare" in message and "children:" in message


@pytest.mark.parametrize("version", ["2", "'1'", "true", "0.9"])
def test_unknown_version_is_an_error(tmp_path: Path, version: str) -> None:
    message, _ = load_error(tmp_path, f"version: {version}\nroots: [Pets]\n")
    assert "is not supported" in message and "version: 1" in message


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ('""', "empty"),
        ('"  - "', "empty"),
        ("'" + "x" * 200 + "'", "too_long"),
        ("'2024'", "garbage"),
        ('"!!!"', "garbage"),
        ('"Pets\\nCats"', "not_a_name"),
        ('"one two three four five six seven eight nine ten eleven twelve thirteen"', "not_a_name"),
    ],
)
def test_bad_names_in_the_seed_are_errors(tmp_path: Path, name: str, reason: str) -> None:
    message, path = load_error(
        tmp_path, f"roots:\n  - name: Healthcare\n    children: [A, {name}]\n"
    )
    assert str(path) in message
    assert "roots[0].children[1]" in message
    assert f"({reason})" in message
    assert len(message) < 400  # a 200-character name is shortened in the message


def test_bad_root_name_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"seed\.yaml: roots\[1\]: name '\?\?\?'.*garbage"):
        parse_taxonomy('roots: [Pets, "???"]', source_name="seed.yaml")


@pytest.mark.parametrize(
    ("text", "second", "first"),
    [
        ("roots: [Pets, Cats, ' pets.']", "roots[2]", "roots[0]"),
        ("roots: [Pets, PETS]", "roots[1]", "roots[0]"),
        ("roots:\n  - name: A\n    children: [B, C, '2. b']\n", "roots[0].children[2]",
         "roots[0].children[0]"),
        ("roots:\n  - name: A\n    children: [B]\n    custom: [b]\n", "roots[0].custom[0]",
         "roots[0].children[0]"),
        ("roots:\n  - {name: AI, language: en}\n  - {name: ai, language: zh}\n", "roots[1]",
         "roots[0]"),
    ],
)  # fmt: skip
def test_duplicate_siblings_name_both_positions(text: str, second: str, first: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_taxonomy(text, source_name="seed.yaml")
    message = str(err.value)
    assert message.startswith(f"taxonomy seed.yaml: {second}: name ")
    assert f"duplicates {first} (" in message


def test_same_name_under_different_parents_is_fine() -> None:
    text = "roots:\n  - {name: Home, children: [Pets]}\n  - {name: Healthcare, children: [Pets]}\n"
    nodes = seed_nodes(parse_taxonomy(text))
    pets = [node for node in nodes if node.name == "Pets"]
    assert len(pets) == 2 and pets[0].node_id != pets[1].node_id


# --- TreeNode ----------------------------------------------------------------------------------


def test_tree_node_from_path_derives_every_field() -> None:
    node = TreeNode.from_path(
        [" Healthcare", "1. Nutrition"], language="en", source="llm", is_leaf=True
    )
    assert node.path == ["Healthcare", "Nutrition"]
    assert node.name == "Nutrition" and node.level == 1
    assert node.path_text == "Healthcare > Nutrition"
    assert node.parent_id == node_id(["Healthcare"])
    assert node.node_id == node_id(["Healthcare", "Nutrition"])


def test_tree_node_is_frozen_and_strict() -> None:
    node = TreeNode.from_path(["Pets"], language="en", source="seed", is_leaf=True)
    with pytest.raises(ValidationError):
        node.is_leaf = False
    with pytest.raises(ValidationError, match="extra"):
        TreeNode(**{**node.model_dump(), "color": "red"})
    with pytest.raises(ValidationError, match="source"):
        TreeNode(**{**node.model_dump(), "source": "web"})
    with pytest.raises(ValidationError, match="language"):
        TreeNode(**{**node.model_dump(), "language": "English"})


def test_tree_node_rejects_fields_that_disagree_with_the_path() -> None:
    node = TreeNode.from_path(["Pets", "Cats"], language="en", source="llm", is_leaf=True)
    fields = node.model_dump()
    for field, wrong in [
        ("node_id", node_id(["Pets", "Dogs"])),
        ("parent_id", None),
        ("level", 0),
        ("name", "Dogs"),
        ("path_text", "Pets/Cats"),
        ("node_id", "Pets, Cats"),
    ]:
        with pytest.raises(ValidationError, match=field):
            TreeNode(**{**fields, field: wrong})
    with pytest.raises(ValidationError, match="not normalized"):
        TreeNode(**{**fields, "path": ["Pets", "Cats."], "name": "Cats."})


def test_seed_nodes_rejects_duplicate_roots_built_in_code() -> None:
    roots = [SeedRoot(name="Pets"), SeedRoot(name="pets")]
    with pytest.raises(ValueError, match="same tag"):
        seed_nodes(roots)


def test_seed_nodes_accepts_plain_seed_nodes() -> None:
    nodes = seed_nodes([SeedNode(name="Pets", children=[SeedNode(name="Cats")])])
    assert [(n.path_text, n.language, n.is_leaf) for n in nodes] == [
        ("Pets", "en", False),
        ("Pets > Cats", "en", True),
    ]
