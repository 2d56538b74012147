"""Gateway state that must outlive a process: approvals and quarantine items,
defender bans, second-factor secrets' replay marks.

One SQLite database per node, ``data_dir/state.sqlite`` (mode 0600, WAL
journal, ``synchronous=FULL``: a ban or an approval is on disk before the
gateway acts on it). Each owner creates its own tables, prefixed with its
name (``defender_bans``, ``quarantine_items``), with :meth:`StateDB.ensure`.

The calls are short (a row or a few) and run on the caller's thread; SQLite
serialises writers across processes with its own lock, so the CLI (``conduit
approve``) and a running gateway share the file safely. When several nodes
must share state this is the seam where a PostgreSQL implementation goes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATE_FILE = "state.sqlite"


class StateDB:
    """A small wrapper over one SQLite file: schema, transactions, queries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Born 0600 (never world-readable). Only when it is missing: closing
            # any descriptor of the file drops every POSIX lock this process
            # holds on it, SQLite's own included, so a second StateDB in the
            # same process would let another process think the file unused.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")

    @classmethod
    def open(cls, data_dir: Path) -> StateDB:
        return cls(data_dir / STATE_FILE)

    def ensure(self, ddl: str) -> None:
        """Create an owner's tables if they are missing (``CREATE ... IF NOT EXISTS``)."""
        self._db.executescript(ddl)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable change: committed on leaving, rolled back on error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        self._db.close()
