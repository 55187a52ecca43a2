"""The seed taxonomy YAML (roots of the World Knowledge Tree) and the tree-node record.

The user's seed file holds the root domains and, optionally, levels they already have; the
`knowledge_tree` asset expands it with an LLM. Format (version 1):

```yaml
version: 1              # optional; only 1 is understood
language: en            # optional; default language of the roots below ("en" if absent)
roots:
  - name: Healthcare
    children:            # optional: levels the user already has, nested to any depth
      - name: Nutrition
        children: [Vitamins, "Diet planning"]   # a child may be a plain string
  - Pets                 # a root may be a plain string
  - name: 人工智能
    language: zh         # a node's language applies to its whole subtree
    custom: [Large language models]   # trending/custom tags, children of this node
```

A node is a plain string (its name) or a mapping with `name` and optionally `language`,
`children` and `custom`. Names are normalized with `tag_ids.normalize_name`; a name that
`tag_ids.name_problem` rejects, or two siblings with the same `tag_ids.sibling_key`, is an error
in the file (the user wrote it), reported with its place such as "roots[3].children[1]".
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from condor_dagster.core.tag_ids import (
    NAME_MAX_LEN,
    SENTENCE_MIN_WORDS,
    check_partition_key,
    name_problem,
    node_id,
    normalize_name,
    sibling_key,
)

TAXONOMY_VERSION = 1
DEFAULT_LANGUAGE = "en"
PATH_TEXT_SEPARATOR = " > "

NodeSource = Literal["seed", "llm", "custom"]

# BCP 47-like: "en", "zh", "zh-Hans", "pt-BR".
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*\Z")
_TOP_KEYS = ("version", "language", "roots")
_NODE_KEYS = ("name", "language", "children", "custom")

_PROBLEM_TEXT = {
    "empty": ("is empty", "write a name or remove the entry"),
    "too_long": (
        f"is longer than {NAME_MAX_LEN} characters",
        "shorten it to a topic name",
    ),
    "garbage": (
        "is not a name (no letters, mostly symbols, or a broken character)",
        "write the topic name in words",
    ),
    "not_a_name": (
        "reads like a sentence or several lines, not a tag name",
        f"use one short topic name (one line, fewer than {SENTENCE_MIN_WORDS} words)",
    ),
}


def _check_language_code(value: str) -> str:
    if not _LANGUAGE_CODE.match(value):
        raise ValueError(
            f"language {value!r} is not a language code; use a BCP 47 code such as en, zh "
            "or zh-Hans"
        )
    return value


class TreeNode(BaseModel):
    """One node of the World Knowledge Tree. Ids derive from the path, so the same path always
    gives the same node; build one with `TreeNode.from_path`."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    node_id: str
    """`tag_ids.node_id(path)`; the Dagster partition key of a leaf."""
    parent_id: str | None
    """Id of the parent node (`node_id(path[:-1])`); None for a root."""
    level: int
    """Depth: 0 for a root domain, 1 for its sub-domains, ..."""
    name: str
    """Normalized name of this node (last entry of `path`)."""
    path: list[str]
    """Names from the root down to this node."""
    path_text: str
    """`path` joined with " > ", as shown to the LLM and in the UI."""
    language: str
    """Language of the names and of the data generated under this node ("en", "zh", ...)."""
    source: NodeSource
    """Where the node comes from: the seed file, LLM expansion, or the user's custom tags."""
    is_leaf: bool
    """Whether the node has no children (leaves become `tags` partitions)."""

    @field_validator("language")
    @classmethod
    def _language_is_a_code(cls, value: str) -> str:
        return _check_language_code(value)

    @model_validator(mode="after")
    def _ids_match_path(self) -> TreeNode:
        # Every field is derived from the path; a mismatch is a bug in whoever built the node.
        check_partition_key(self.node_id)
        if not self.path:
            raise ValueError("TreeNode.path is empty; give the names from the root to the node")
        for index, name in enumerate(self.path):
            if name != normalize_name(name):
                raise ValueError(
                    f"TreeNode path[{index}] {name!r} is not normalized (expected "
                    f"{normalize_name(name)!r}); build nodes with TreeNode.from_path"
                )
        expected = {
            "node_id": node_id(self.path),
            "parent_id": node_id(self.path[:-1]) if len(self.path) > 1 else None,
            "level": len(self.path) - 1,
            "name": self.path[-1],
            "path_text": PATH_TEXT_SEPARATOR.join(self.path),
        }
        for field, value in expected.items():
            if getattr(self, field) != value:
                raise ValueError(
                    f"TreeNode {field} {getattr(self, field)!r} does not match its path "
                    f"{self.path!r} (expected {value!r}); build nodes with TreeNode.from_path"
                )
        return self

    @classmethod
    def from_path(
        cls, path: Sequence[str], *, language: str, source: NodeSource, is_leaf: bool
    ) -> TreeNode:
        """The node at `path`, names normalized, with id, parent id, level and path text."""
        names = [normalize_name(name) for name in path]
        return cls(
            node_id=node_id(names),
            parent_id=node_id(names[:-1]) if len(names) > 1 else None,
            level=len(names) - 1,
            name=names[-1] if names else "",
            path=names,
            path_text=PATH_TEXT_SEPARATOR.join(names),
            language=language,
            source=source,
            is_leaf=is_leaf,
        )


class SeedNode(BaseModel):
    """A node of the seed file below the roots (names already normalized and checked)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str
    """Normalized name."""
    language: str | None = None
    """Language of this subtree; None inherits the parent's."""
    children: list[SeedNode] = []
    """Levels the user already has below this node."""
    custom: list[str] = []
    """The user's trending/custom tags, placed as children of this node (source "custom")."""


class SeedRoot(SeedNode):
    """A root domain (level 0) of the seed file; its language is always resolved."""

    language: str = DEFAULT_LANGUAGE
    """Language of this root's subtree (the root's own, else the file's `language:`)."""


def default_taxonomy_path() -> Path:
    """The packaged seed taxonomy: the 45 Condor root domains in English and in Chinese."""
    return Path(
        str(
            importlib.resources.files("condor_dagster.methods.condor")
            / "data"
            / "taxonomy_default.yaml"
        )
    )


def load_taxonomy(path: str | Path) -> list[SeedRoot]:
    """Read and validate a seed taxonomy YAML file; ValueError names the problem and the fix."""
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise ValueError(
            f"taxonomy file {str(file)!r} {what}; point knowledge_tree's taxonomy_path at an "
            f"existing YAML file (the packaged default is {default_taxonomy_path()})"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"taxonomy {file} is not UTF-8 text ({err}); save it as UTF-8") from err
    return parse_taxonomy(text, source_name=str(file))


def parse_taxonomy(text: str, source_name: str = "<string>") -> list[SeedRoot]:
    """Parse seed taxonomy YAML text; `source_name` names it in error messages."""
    data = _load_yaml(text, source_name)
    if data is None:
        raise _no_roots(source_name)
    if not isinstance(data, dict):
        raise ValueError(
            f"taxonomy {source_name}: the top level must be a mapping with `version: 1`, "
            f"`language:` and `roots:`, got {_kind(data)}"
        )
    _reject_unknown_keys(data, _TOP_KEYS, "the top level", source_name)
    version = data.get("version", TAXONOMY_VERSION)
    if isinstance(version, bool) or version != TAXONOMY_VERSION:
        raise ValueError(
            f"taxonomy {source_name}: version {version!r} is not supported; this code reads "
            f"`version: {TAXONOMY_VERSION}` (see condor_dagster/core/taxonomy.py for the format)"
        )
    language = _language(data.get("language", DEFAULT_LANGUAGE), "language", source_name)
    raw_roots = data.get("roots")
    if raw_roots is None or raw_roots == []:
        raise _no_roots(source_name)
    if not isinstance(raw_roots, list):
        raise ValueError(
            f"taxonomy {source_name}: roots must be a list (lines starting with `- `), "
            f"got {_kind(raw_roots)}"
        )
    parser = _SeedParser(source_name)
    roots = [parser.node(raw, f"roots[{i}]") for i, raw in enumerate(raw_roots)]
    parser.check_siblings([(root.name, f"roots[{i}]") for i, root in enumerate(roots)])
    return [
        SeedRoot(
            name=root.name,
            language=root.language or language,
            children=root.children,
            custom=root.custom,
        )
        for root in roots
    ]


def seed_nodes(roots: Sequence[SeedNode]) -> list[TreeNode]:
    """Flatten seed roots into TreeNodes, parents before children, in file order.

    Seed nodes get source "seed", `custom:` entries source "custom"; a node is a leaf when the
    seed gives it no children (expansion recomputes leaves later). Language comes from the
    nearest node that sets one, else "en".
    """
    nodes: list[TreeNode] = []
    seen: dict[str, str] = {}

    def add(node: TreeNode) -> None:
        if node.node_id in seen:
            raise ValueError(
                f"seed nodes {seen[node.node_id]!r} and {node.path_text!r} are the same tag "
                f"(id {node.node_id}); remove or rename one of them"
            )
        seen[node.node_id] = node.path_text
        nodes.append(node)

    def walk(seed: SeedNode, parent_path: list[str], inherited_language: str) -> None:
        path = [*parent_path, seed.name]
        language = seed.language or inherited_language
        is_leaf = not seed.children and not seed.custom
        add(TreeNode.from_path(path, language=language, source="seed", is_leaf=is_leaf))
        for child in seed.children:
            walk(child, path, language)
        for name in seed.custom:
            add(TreeNode.from_path([*path, name], language=language, source="custom", is_leaf=True))

    for root in roots:
        walk(root, [], DEFAULT_LANGUAGE)
    return nodes


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                continue  # SafeLoader itself reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str, source_name: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(
            f"taxonomy {source_name} is not valid YAML{where}: {problem}; fix the YAML there "
            "(quote names that contain ': ' or start with a special character)"
        ) from err


class _SeedParser:
    """Turns the YAML data of one file into SeedNodes, naming the place of every error."""

    def __init__(self, source_name: str) -> None:
        self.source_name = source_name

    def error(self, where: str, message: str) -> ValueError:
        return ValueError(f"taxonomy {self.source_name}: {where}: {message}")

    def node(self, raw: Any, where: str) -> SeedNode:
        if isinstance(raw, str):
            return SeedNode(name=self.name(raw, where))
        if not isinstance(raw, dict):
            raise self.error(
                where,
                f"expected a name or a mapping with `name:`, got {_kind(raw)}; "
                "quote it if it is meant as a name",
            )
        _reject_unknown_keys(raw, _NODE_KEYS, where, self.source_name)
        if "name" not in raw:
            raise self.error(where, "has no `name:`; add `name: <topic>` to this entry")
        name = self.name(raw["name"], f"{where}.name")
        language = raw.get("language")
        if language is not None:
            language = _language(language, f"{where}.language", self.source_name)
        children = [
            self.node(child, f"{where}.children[{i}]")
            for i, child in enumerate(self.items(raw.get("children"), f"{where}.children"))
        ]
        custom = [
            self.name(item, f"{where}.custom[{i}]")
            for i, item in enumerate(self.items(raw.get("custom"), f"{where}.custom"))
        ]
        self.check_siblings(
            [(child.name, f"{where}.children[{i}]") for i, child in enumerate(children)]
            + [(tag, f"{where}.custom[{i}]") for i, tag in enumerate(custom)]
        )
        return SeedNode(name=name, language=language, children=children, custom=custom)

    def items(self, raw: Any, where: str) -> list[Any]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self.error(
                where, f"must be a list (`[a, b]` or lines starting with `- `), got {_kind(raw)}"
            )
        return raw

    def name(self, raw: Any, where: str) -> str:
        if not isinstance(raw, str):
            raise self.error(
                where,
                f"a name must be text, got {_kind(raw)}; quote it if it is meant as a name",
            )
        problem = name_problem(raw)
        if problem is not None:
            what, fix = _PROBLEM_TEXT[problem]
            raise self.error(where, f"name {_short(raw)} {what} ({problem}); {fix}")
        return normalize_name(raw)

    def check_siblings(self, names: list[tuple[str, str]]) -> None:
        first: dict[str, tuple[str, str]] = {}
        for name, where in names:
            key = sibling_key(name)
            if key in first:
                other_name, other_where = first[key]
                raise self.error(
                    where,
                    f"name {name!r} duplicates {other_where} ({other_name!r}): siblings are "
                    "compared ignoring case, numbering and surrounding punctuation; remove or "
                    "rename one of them",
                )
            first[key] = (name, where)


def _reject_unknown_keys(
    mapping: dict[Any, Any], allowed: tuple[str, ...], where: str, source_name: str
) -> None:
    unknown = [key for key in mapping if key not in allowed]
    if unknown:
        hint = ""
        if where.startswith("roots") and len(unknown) == 1 and len(mapping) == 1:
            hint = f"; to give {unknown[0]!r} children write `name: {unknown[0]}` and `children:`"
        raise ValueError(
            f"taxonomy {source_name}: {where}: unknown key {unknown[0]!r}; allowed keys are "
            f"{', '.join(allowed)}{hint}"
        )


def _language(value: Any, where: str, source_name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"taxonomy {source_name}: {where} must be a language code such as en or zh, "
            f"got {_kind(value)}"
        )
    try:
        return _check_language_code(value)
    except ValueError as err:
        raise ValueError(f"taxonomy {source_name}: {where}: {err}") from None


def _no_roots(source_name: str) -> ValueError:
    return ValueError(f"taxonomy {source_name} has no roots; add a `roots:` list")


def _kind(value: Any) -> str:
    """How a YAML value reads to its author: 'a mapping', 'a number (42)', ..."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"a boolean ({value}; YAML reads yes/no/on/off as booleans)"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if value is None:
        return "nothing (an empty entry)"
    return f"{type(value).__name__} ({value!r})"


def _short(raw: str, limit: int = 60) -> str:
    return repr(raw if len(raw) <= limit else raw[:limit] + "…")
