"""The journal's last records, kept after they are written, for its readers.

The SIEM sinks and the search index read every line back moments after the
journal wrote it, and parsing it again cost them more than writing it had.
Records are kept by (file number, offset of the line); a reader takes one only
when the bytes it read from the file are the kept entry's bytes, so what it
gets is what parsing would have given, and a line changed on disk is parsed.
"""

from __future__ import annotations

from collections import OrderedDict

from conduit.audit.events import Record

RECENT_MAX = 8192
_PLAIN = frozenset({str, int, float, bool, type(None)})
_KEYS = frozenset({str})


def _plain(record: Record) -> bool:
    """Whether parsing ``record``'s line gives back an equal dict of the same types
    (no tuple, no str subclass such as an EventType, str keys): only those are kept."""
    if _KEYS.issuperset(map(type, record)) and _PLAIN.issuperset(map(type, record.values())):
        return True  # nearly every record, checked without a Python loop
    for key, value in record.items():
        kind = type(value)
        if type(key) is not str:
            return False
        if kind not in _PLAIN and not (kind is list and all(type(v) is str for v in value)):
            return False
    return True


class RecentRecords:
    """At most :data:`RECENT_MAX` records, oldest dropped first."""

    def __init__(self) -> None:
        # oldest first; popitem(last=False) is O(1) where a dict's first key is not
        self._kept: OrderedDict[tuple[int, int], tuple[bytes, Record]] = OrderedDict()

    def keep(self, number: int, offset: int, lines: list[bytes], records: list[Record]) -> None:
        """``lines`` (without their newline) were written from ``offset`` of file
        ``number``, in order, each followed by a newline, as ``records`` (made by
        ``events.build`` or ``compose``: their keys in the line's sorted order, as
        parsing gives, which a CEF line follows). A record is kept as it is, not
        copied: no one changes a written record."""
        kept = self._kept
        for line, record in zip(lines, records, strict=True):
            if _plain(record):
                kept[(number, offset)] = (line, record)
            offset += len(line) + 1
        while len(kept) > RECENT_MAX:
            kept.popitem(last=False)

    def recall(self, number: int, offset: int, line: bytes) -> Record | None:
        """The record written as ``line`` at that place, if still kept and those are
        its bytes. Safe from any thread (one dict lookup)."""
        hit = self._kept.get((number, offset))
        return hit[1] if hit is not None and hit[0] == line else None
