"""A persistent LLM response cache: SQLite on local disk, keyed by (model, messages, parameters).

SQLite gives atomic, concurrent-safe writes for free: a response is either fully stored or absent, so a
re-run or a resumed run after a crash repeats no call that had finished.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from storage.ids import canonical_json, content_hash


def cache_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """The identity of a request: the same model, messages and parameters give the same answer."""
    return content_hash(model, canonical_json(messages), canonical_json(params))


class ResponseCache:
    """``key -> response dict`` in one SQLite file; safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        with self._connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not cross threads.
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            self._local.con = con
        return con

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response, if any."""
        row = self._connect().execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, response: dict[str, Any]) -> None:
        """Store a response (the first one stored for a key wins)."""
        self._connect().execute(
            "INSERT OR IGNORE INTO responses (key, response) VALUES (?, ?)", (key, json.dumps(response))
        )

    def delete(self, key: str) -> None:
        """Forget a response (one its caller could not use), so the request is asked again."""
        self._connect().execute("DELETE FROM responses WHERE key = ?", (key,))

    def compact(self, apply: bool) -> tuple[int, int]:
        """Bytes of the cache's files before and after ``VACUUM`` (dry run: after, as estimated).

        Every stored answer is kept (a SQLite file has no old versions; only free pages and the
        write-ahead log are reclaimed). SQLite locks the file meanwhile, so callers wait and go on.
        """
        before = self._bytes()
        con = self._connect()
        if not apply:
            page_size, free = (
                con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "freelist_count")
            )
            wal = self.path.with_name(self.path.name + "-wal")
            return before, before - page_size * free - (wal.stat().st_size if wal.exists() else 0)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("VACUUM")
        return before, self._bytes()

    def _bytes(self) -> int:
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists())

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT count(*) FROM responses").fetchone()[0])
