"""Finding the corpus sources under a root and cutting them into shards (pure: no dagster).

A shard is one partition of `corpus/documents`: a one-document file, or `docs_per_shard`
consecutive documents of a JSONL / Parquet / saved-dataset source. Its key comes from the
source's relative path, so it is readable in the UI and the same on every discovery.

Keys: the lowercased path with "/" as ".", every other character outside [a-z0-9._-] as "-",
runs collapsed, leading separators stripped. A path that this changes beyond lowercasing
("Notes 1.txt", "中文.html") gets "-<8 hex of sha256(path)>", so its key depends on nothing but
its own path. Collection sources always carry a shard suffix (".000", ".001", ...), also when
they hold a single shard, so a growing file keeps its first key. Too long keys are cut and
hashed; two sources that still meet on one key ("a/b.txt" and "a.b.txt", "A.txt" and "a.txt")
both get the hash.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from condor_dagster.core.tag_ids import PARTITION_KEY_PATTERN
from condor_dagster.methods.corpus.records import DocumentRow
from condor_dagster.methods.corpus.sources import (
    COLLECTION_KINDS,
    SourceKind,
    count_documents,
    read_documents,
    source_kind,
)

KEY_MAX_LEN = 64
_HASH_CHARS = 8
_OUTSIDE = re.compile(r"[^a-z0-9._-]")
_RUNS = re.compile(r"([._-])[._-]*")


class Shard(BaseModel):
    """One partition of corpus/documents: documents [start, stop) of one source."""

    model_config = ConfigDict(frozen=True)

    key: str
    """The corpus_shards partition key."""
    source: str
    """Path of the source relative to the corpus root (posix)."""
    start: int
    """First document position of the shard."""
    stop: int
    """One past the last position; a one-document file is [0, 1)."""
    fingerprint: str
    """"<size>:<mtime_ns>" of the source (a saved dataset: its files summed / latest), to
    report files changed after their shards were requested."""


class Discovery(BaseModel):
    """What a corpus root holds."""

    shards: list[Shard] = Field(default_factory=list)
    """Every shard, sorted by source path then start."""
    ignored: list[str] = Field(default_factory=list)
    """Relative paths of files that are not sources (images, CSS, scripts, ...)."""
    empty: list[str] = Field(default_factory=list)
    """Collection sources without any document (an empty JSONL file, a 0-row Parquet)."""


def missing_root_error(root: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"corpus folder {root} does not exist; create it and put documents in it, or point "
        "CONDOR_CORPUS_DIR (or the corpus resource's `path`) at your corpus"
    )


def discover(root: Path, *, docs_per_shard: int) -> Discovery:
    """The shards of every source under `root` (a folder, or a single source file)."""
    if docs_per_shard < 1:
        raise ValueError(f"docs_per_shard must be at least 1, got {docs_per_shard}")
    if not root.exists():
        raise missing_root_error(root)
    sources: list[tuple[str, Path, SourceKind]] = []
    ignored: list[str] = []
    if root.is_file() or source_kind(root) == "hf_dataset":
        kind = source_kind(root)
        if kind is None:
            ignored.append(root.name)
        else:
            sources.append((root.name, root, kind))
    else:
        _walk(root, root, sources, ignored)
    sources.sort(key=lambda item: item[0])
    counts = {rel: count_documents(path, kind) for rel, path, kind in sources}
    collections = {rel for rel, _, kind in sources if kind in COLLECTION_KINDS}
    bases = _base_keys([rel for rel, _, _ in sources], collections, counts, docs_per_shard)
    shards: list[Shard] = []
    empty: list[str] = []
    for rel, path, _ in sources:
        fingerprint = _fingerprint(path)
        if rel not in collections:
            shards.append(
                Shard(key=bases[rel], source=rel, start=0, stop=1, fingerprint=fingerprint)
            )
            continue
        if counts[rel] == 0:
            empty.append(rel)
        width = _suffix_width(counts[rel], docs_per_shard)
        for index, start in enumerate(range(0, counts[rel], docs_per_shard)):
            stop = min(start + docs_per_shard, counts[rel])
            key = f"{bases[rel]}.{index:0{width}d}"
            shards.append(
                Shard(key=key, source=rel, start=start, stop=stop, fingerprint=fingerprint)
            )
    for shard in shards:
        if not PARTITION_KEY_PATTERN.match(shard.key):  # a bug in the key rules, never data
            raise AssertionError(f"shard key {shard.key!r} of {shard.source} is not valid")
    return Discovery(shards=shards, ignored=sorted(ignored), empty=empty)


def read_shard(root: Path, shard: Shard, *, text_field: str) -> list[DocumentRow]:
    """The documents of `shard`, one row each (dropped ones included)."""
    if not root.exists():
        raise missing_root_error(root)
    single = root.is_file() or source_kind(root) == "hf_dataset"
    path = root if single else root / shard.source
    if not path.exists():
        raise FileNotFoundError(
            f"source {shard.source} of shard {shard.key} is no longer in {root}; it was "
            "removed or renamed after discovery"
        )
    return read_documents(
        path,
        source=shard.source,
        shard=shard.key,
        text_field=text_field,
        start=shard.start,
        stop=shard.stop,
    )


def shard_key_base(rel: str, *, reserve: int = 0) -> str:
    """The key of source `rel` before collision handling, leaving `reserve` characters for a
    shard suffix."""
    slug = _slug(rel)
    plain = slug == rel.lower().replace("/", ".")
    if plain and len(slug) + reserve <= KEY_MAX_LEN:
        return slug
    return _hashed(slug, rel, reserve=reserve)


def _hashed(slug: str, rel: str, *, reserve: int) -> str:
    digest = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:_HASH_CHARS]
    room = KEY_MAX_LEN - reserve - 1 - _HASH_CHARS
    cut = slug[:room].rstrip("._-")
    return f"{cut}-{digest}" if cut else f"doc-{digest}"


def _base_keys(
    rels: list[str], collections: set[str], counts: dict[str, int], docs_per_shard: int
) -> dict[str, str]:
    reserve = {
        rel: 1 + _suffix_width(counts[rel], docs_per_shard) if rel in collections else 0
        for rel in rels
    }
    bases = {rel: shard_key_base(rel, reserve=reserve[rel]) for rel in rels}
    # Collection keys end in ".NNN" and one-document keys in their suffix or a hash, so only
    # equal bases can meet; both sides of a clash take the hash.
    taken = Counter(bases.values())
    for rel in rels:
        if taken[bases[rel]] > 1:
            bases[rel] = _hashed(_slug(rel), rel, reserve=reserve[rel])
    return bases


def _slug(rel: str) -> str:
    slug = _RUNS.sub(r"\1", _OUTSIDE.sub("-", rel.lower().replace("/", ".")))
    return re.sub(r"^[^a-z0-9]+", "", slug).rstrip("._-")


def _suffix_width(count: int, docs_per_shard: int) -> int:
    shards = max(1, -(-count // docs_per_shard))
    return max(3, len(str(shards - 1)))


def _walk(
    root: Path, folder: Path, sources: list[tuple[str, Path, SourceKind]], ignored: list[str]
) -> None:
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue  # .git, .DS_Store, editor swap files
        rel = entry.relative_to(root).as_posix()
        if entry.is_dir() and not entry.is_symlink():
            if source_kind(entry) == "hf_dataset":
                sources.append((rel, entry, "hf_dataset"))
            else:
                _walk(root, entry, sources, ignored)
            continue
        kind = source_kind(entry) if entry.is_file() else None
        if kind is None:
            ignored.append(rel)
        else:
            sources.append((rel, entry, kind))


def _fingerprint(path: Path) -> str:
    if path.is_dir():
        stats = [p.stat() for p in sorted(path.iterdir()) if p.is_file()]
        size = sum(s.st_size for s in stats)
        mtime = max((s.st_mtime_ns for s in stats), default=0)
        return f"{size}:{mtime}"
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"
