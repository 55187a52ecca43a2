"""Persistent, content-addressed store of raw completions (SQLite).

Keys come from `core.llm.request_key`. Both LLM backends write here chunk by chunk as results
arrive, so a crashed run loses at most the chunk in flight and its rerun generates only the rest.
WAL mode lets several run processes read and write the same file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from condor_dagster.core.llm import RawCompletion

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    created_at REAL NOT NULL
)
"""
# SQLite's default limit on bound variables is 32766; stay well below it.
_LOOKUP_BATCH = 900


class ResponseCache:
    """A thread-safe handle on one SQLite cache file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)
        self._conn.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, RawCompletion]:
        found: dict[str, RawCompletion] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), _LOOKUP_BATCH):
                batch = unique[start : start + _LOOKUP_BATCH]
                marks = ",".join("?" * len(batch))
                rows = self._conn.execute(
                    "SELECT key, text, finish_reason, prompt_tokens, completion_tokens, latency_s"
                    f" FROM completions WHERE key IN ({marks})",
                    batch,
                )
                for key, *values in rows:
                    found[key] = RawCompletion(*values)
        return found

    def put_many(self, items: Iterable[tuple[str, RawCompletion]]) -> int:
        """Store completions in one transaction; returns how many were written."""
        now = time.time()
        rows = [
            (
                key,
                raw.text,
                raw.finish_reason,
                raw.prompt_tokens,
                raw.completion_tokens,
                raw.latency_s,
                now,
            )
            for key, raw in items
        ]
        if not rows:
            return 0
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )
        return len(rows)

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
