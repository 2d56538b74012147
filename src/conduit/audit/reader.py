"""Reading the journal forward from a sequence number (for sinks, tail and export)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from conduit.audit.events import Record, decode
from conduit.audit.journal import FILE_RE, journal_files

#: (file number, offset, line) -> the record the writer has for those bytes, or None
Recall = Callable[[int, int, bytes], Record | None]


class JournalReader:
    """Reads complete records after a given seq; remembers where it stopped.

    Only lines that end in a newline are read: a line still being written (or
    torn by a crash) is never handed out.
    """

    def __init__(self, directory: Path, recall: Recall | None = None) -> None:
        """``recall``: the writing journal's :meth:`~conduit.audit.journal.Journal.recall`
        (in the gateway), which spares parsing the lines it has just written."""
        self.directory = directory
        self._recall = recall
        self._path: Path | None = None
        self._offset = 0
        self._last = -1
        self._first_seq: dict[Path, int] = {}

    def _first(self, path: Path) -> int | None:
        seq = self._first_seq.get(path)
        if seq is None:
            with path.open("rb") as f:
                line = f.readline()
            if not line.endswith(b"\n"):
                return None
            seq = self._first_seq[path] = decode(line[:-1])["seq"]
        return seq

    def _locate(self, after: int) -> None:
        files = journal_files(self.directory)
        chosen = files[0] if files else None
        for path in files:
            first = self._first(path)
            if first is not None and first <= after + 1:
                chosen = path
        offset = _line_before(chosen, after) if chosen is not None else 0
        self._path, self._offset, self._last = chosen, offset, -1

    def read_after(self, after: int, limit: int = 1000) -> list[Record]:
        """Up to ``limit`` records with seq > ``after``, in order."""
        return [record for record, _ in self.read_lines_after(after, limit)]

    def read_lines_after(self, after: int, limit: int = 1000) -> list[tuple[Record, bytes]]:
        """Like :meth:`read_after`, each record with its canonical line (no newline)."""
        if self._path is None or self._last != after:
            self._locate(after)
        out: list[tuple[Record, bytes]] = []
        while self._path is not None and len(out) < limit:
            try:
                f = self._path.open("rb")
            except FileNotFoundError:
                self._path = None
                break
            match = FILE_RE.match(self._path.name)
            number = int(match.group(1)) if match and self._recall else -1
            with f:
                f.seek(self._offset)
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break
                    line = raw[:-1]
                    record = None
                    if number >= 0:
                        record = self._recall(number, self._offset, line)  # type: ignore[misc]
                    try:
                        record = record or decode(line)
                    except ValueError:
                        break  # damaged: wait here (recovery moves a torn line aside)
                    self._offset += len(raw)
                    if record["seq"] > after:
                        out.append((record, line))
                        after = record["seq"]
                        if len(out) >= limit:
                            break
            if len(out) >= limit:
                break
            if os.path.getsize(self._path) > self._offset:
                break
            nxt = self._next_file()
            if nxt is None:
                break
            self._path, self._offset = nxt, 0
        self._last = after
        return out

    def _next_file(self) -> Path | None:
        files = journal_files(self.directory)
        later = [p for p in files if self._path is not None and p.name > self._path.name]
        return later[0] if later else None


SCAN = 64 * 1024  # below this, reading forward line by line is cheaper than probing


def _line_before(path: Path, after: int) -> int:
    """Offset of a line start at or before the record ``after + 1`` in ``path``.

    A binary search on byte offsets: each probe reads the first whole line
    after a point and compares its seq, so a sink or a tail resuming in a
    64 MiB file reads a few dozen lines instead of decoding every one. A
    probe that lands on a damaged or unfinished line moves the bound back,
    never forward: the reader then skips forward as it always did.
    """
    low, high = 0, path.stat().st_size
    with path.open("rb") as f:
        while high - low > SCAN:
            middle = (low + high) // 2
            f.seek(middle)
            f.readline()  # the rest of the line the probe landed in
            start = f.tell()
            raw = f.readline()
            try:
                seq = decode(raw[:-1])["seq"] if raw.endswith(b"\n") else None
            except ValueError:
                seq = None
            if seq is not None and seq <= after:
                low = start
            else:
                high = middle
    return low


def last_records(directory: Path, count: int) -> list[Record]:
    """The last ``count`` complete records, reading files from the newest back."""
    out: list[Record] = []
    for path in reversed(journal_files(directory)):
        if len(out) >= count:
            break
        lines = path.read_bytes().split(b"\n")[:-1]
        found: list[Record] = []
        for raw in reversed(lines):
            if len(out) + len(found) >= count:
                break
            try:
                found.append(decode(raw))
            except ValueError:
                continue
        out = list(reversed(found)) + out
    return out[-count:] if count else []
