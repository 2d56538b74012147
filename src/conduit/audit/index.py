"""A SQLite index over the journal for ``conduit audit search``.

Derived data: it can be deleted and rebuilt from the journal at any time. It
stores the searchable columns and where each record lives (file, offset,
length); results are read back from the journal itself. The running gateway
refreshes it every few seconds; the CLI refreshes it before each search.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conduit.audit.events import Record, decode
from conduit.audit.journal import FILE_RE, file_name, journal_files
from conduit.audit.reader import Recall

INDEX_FILE = "index.sqlite"
#: ``user_given`` (a refused login's name) and ``sha256`` (a transfer's end) are
#: empty in most records: their indexes are partial, so a record without them
#: costs no insert there (a fifth less CPU per indexed record). A search by
#: either names a value, which implies "not NULL", so SQLite still uses them.
#: An index file made before keeps its full indexes; both answer the same.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, type TEXT NOT NULL, outcome TEXT NOT NULL,
  principal TEXT, user_given TEXT, path TEXT, sha256 TEXT,
  file INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_principal ON events(principal);
CREATE INDEX IF NOT EXISTS events_user_given ON events(user_given) WHERE user_given IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_path ON events(path);
CREATE INDEX IF NOT EXISTS events_sha256 ON events(sha256) WHERE sha256 IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_type ON events(type, outcome);
CREATE TABLE IF NOT EXISTS resume (id INTEGER PRIMARY KEY CHECK (id = 1),
  file INTEGER NOT NULL, offset INTEGER NOT NULL, seq INTEGER NOT NULL);
"""


_INSERT = "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_REPLACE = "INSERT OR REPLACE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_RESUME = "INSERT OR REPLACE INTO resume VALUES (1, ?, ?, ?)"


@dataclass
class Query:
    user: str | None = None
    path: str | None = None
    sha256: str | None = None
    since: str | None = None
    until: str | None = None
    type: str | None = None
    outcome: str | None = None
    limit: int | None = None
    newest_first: bool = False


def parse_time(text: str, now: datetime | None = None) -> str:
    """``2026-11-24``, ``2026-11-24T10:00``, ``...Z``/offset, or ``15m``/``2h``/``7d`` ago."""
    now = now or datetime.now(UTC)
    m = re.fullmatch(r"(\d+)\s*([smhdw])", text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        when = now - timedelta(**{unit[m.group(2)]: int(m.group(1))})
    else:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a time: {text!r} (ISO 8601 or e.g. 15m, 2h, 7d)") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Index:
    def __init__(self, directory: Path, recall: Recall | None = None) -> None:
        """``recall``: see :class:`~conduit.audit.reader.JournalReader`."""
        self.directory = directory
        self._recall = recall
        self.db = sqlite3.connect(directory / INDEX_FILE, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript(_SCHEMA)
        self.stopping = False  # set from another thread: return after the current batch

    def close(self) -> None:
        self.db.close()

    def _resume(self) -> tuple[int, int, int]:
        row = self.db.execute("SELECT file, offset, seq FROM resume WHERE id = 1").fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    def refresh(self, limit: int | None = None) -> int:
        """Index records written since the last refresh (at most ``limit``; None: all).

        Rebuilds from scratch if the journal changed under the index.
        """
        cap = limit if limit is not None else sys.maxsize
        number, offset, last = self._resume()
        added = self._scan(number, offset, last, cap)
        if added < 0:
            self.db.execute("DELETE FROM events")
            self.db.execute("DELETE FROM resume")
            self.db.commit()
            added = self._scan(0, 0, 0, cap)
        return max(added, 0)

    def _scan(self, number: int, offset: int, last: int, cap: int) -> int:
        """Index from (file ``number``, ``offset``) on; stop after about ``cap`` records
        (at a batch or file boundary) or when asked to; -1: the index must be rebuilt."""
        rows: list[tuple[object, ...]] = []
        added = 0
        batch = min(20_000, cap)
        for path in journal_files(self.directory):
            n = int(FILE_RE.match(path.name).group(1))  # type: ignore[union-attr]
            if n < number:
                continue
            start = offset if n == number else 0
            if start > os.path.getsize(path):
                return -1
            with path.open("rb") as f:
                f.seek(start)
                pos = start
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break
                    record = self._recall(n, pos, raw[:-1]) if self._recall else None
                    try:
                        record = record or decode(raw[:-1])
                    except ValueError:
                        # a damaged line: index up to here; verify names it
                        return added + self._flush(rows, n, pos, last)
                    if last and record["seq"] != last + 1:
                        return -1  # the journal changed under the index: rebuild
                    last = record["seq"]
                    rows.append(_row(record, n, pos, len(raw)))
                    pos += len(raw)
                    if len(rows) >= batch:
                        added += self._flush(rows, n, pos, last)
                        if self.stopping or added >= cap:
                            return added
            number, offset = n, pos
            added += self._flush(rows, number, offset, last)
            if self.stopping or added >= cap:
                break
        return added

    def _flush(self, rows: list[tuple[object, ...]], number: int, offset: int, seq: int) -> int:
        """Insert ``rows`` and the place to resume from, in one transaction.

        Rows come in after the resume point, so their seqs are new: a plain
        INSERT, which costs SQLite ~40 % less per row than INSERT OR REPLACE.
        Should one be there already (an index whose resume row was lost), the
        batch is rolled back and replaced row by row, as it always was.
        """
        count = len(rows)
        try:
            with self.db:
                self.db.executemany(_INSERT, rows)
                self.db.execute(_RESUME, (number, offset, seq))
        except sqlite3.IntegrityError:
            with self.db:
                self.db.executemany(_REPLACE, rows)
                self.db.execute(_RESUME, (number, offset, seq))
        rows.clear()
        return count

    def search(self, q: Query) -> Iterator[Record]:
        """Matching records, oldest first (or newest first), read back from the journal."""
        where: list[str] = []
        args: list[object] = []
        if q.user is not None:
            where.append("(principal = ? OR user_given = ?)")
            args += [q.user, q.user]
        if q.path is not None:
            where.append("path GLOB ?" if any(c in q.path for c in "*?[") else "path = ?")
            args.append(q.path)
        if q.sha256 is not None:
            digest = q.sha256.lower()
            if not re.fullmatch(r"[0-9a-f]{1,64}", digest):
                raise ValueError(f"not a SHA-256 (or a prefix of one): {q.sha256!r}")
            # a prefix (tables show 16 hex digits) matches every hash it starts
            if len(digest) < 64:
                where.append("sha256 GLOB ?")
                args.append(digest + "*")
            else:
                where.append("sha256 = ?")
                args.append(digest)
        if q.since is not None:
            where.append("ts >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("ts < ?")
            args.append(q.until)
        if q.type is not None:
            if q.type.endswith(".*") or q.type.endswith("*"):
                where.append("type GLOB ?")
            else:
                where.append("type = ?")
            args.append(q.type)
        if q.outcome is not None:
            where.append("outcome = ?")
            args.append(q.outcome)
        sql = "SELECT file, offset, length FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC" if q.newest_first else " ORDER BY seq"
        if q.limit is not None:
            sql += f" LIMIT {int(q.limit)}"
        handles: dict[int, object] = {}
        try:
            for number, offset, length in self.db.execute(sql, args).fetchall():
                f = handles.get(number)
                if f is None:
                    f = handles[number] = (self.directory / file_name(number)).open("rb")
                f.seek(offset)  # type: ignore[attr-defined]
                yield decode(f.read(length).rstrip(b"\n"))  # type: ignore[attr-defined]
        finally:
            for f in handles.values():
                f.close()  # type: ignore[attr-defined]


def _row(record: Record, number: int, offset: int, length: int) -> tuple[object, ...]:
    get = record.get
    # _column's own test, without its call: nearly every value passes (or is None)
    principal, user_given = get("principal"), get("user_given")
    path, sha256 = get("path"), get("sha256")
    if principal is not None and not (type(principal) is str and principal.isascii()):
        principal = _column(principal)
    if user_given is not None and not (type(user_given) is str and user_given.isascii()):
        user_given = _column(user_given)
    if path is not None and not (type(path) is str and path.isascii()):
        path = _column(path)
    if not path:
        path = _column(get("new_path"))
    if sha256 is not None:
        if not (type(sha256) is str and sha256.isascii()):
            sha256 = _column(sha256)
        sha256 = sha256.lower() or None if sha256 else None
    return (
        record["seq"],
        record["ts"],
        record["type"],
        record["outcome"],
        principal,
        user_given,
        path,
        sha256,
        number,
        offset,
        length,
    )


def _column(value: object) -> str | None:
    """A text column's value: ``value`` if it is text, as SQLite can hold it."""
    if type(value) is str and value.isascii():
        return value  # nearly always: no surrogate in it, nothing to check
    return _storable(value) if isinstance(value, str) else None


def _storable(text: str) -> str:
    """``text`` as SQLite can hold it. The journal keeps a client's undecodable
    bytes as lone surrogates, which SQLite refuses; such a record used to stop
    the index for good. Its columns get them as ``\\udcff`` escapes (the
    record itself is always read back from the journal, as written)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
