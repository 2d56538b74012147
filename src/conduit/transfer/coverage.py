"""Which bytes of a file a download sent, once it was read out of order.

A download read front to back is hashed, and its record says so with the
SHA-256. A client that skips ahead or reads scattered ranges (a segmented
downloader, a resume) gets no hash, and its record has to say something
else true: whether every byte of the file left the gateway anyway ("read
out of order") or some never did ("partial read"). An investigator asking
"could the whole file have gone?" must not be told "partial" when it all
went.

The ranges are kept merged, so their count is the number of gaps left.
A client can choose its offsets, so that count is bounded: past
:data:`MAX_SPANS` the coverage is no longer known, and the record says so
instead of guessing either way.
"""

from __future__ import annotations

import bisect

#: Disjoint ranges kept at most (16 bytes each): a client scattering more
#: gaps than this costs no more memory, only the answer.
MAX_SPANS = 1024


class Coverage:
    """The byte ranges served, merged, as ``[start, end)`` pairs."""

    __slots__ = ("_ends", "_starts", "lost")

    def __init__(self, upto: int = 0) -> None:
        """``upto``: the bytes ``[0, upto)`` already served in order."""
        self._starts: list[int] = [0] if upto > 0 else []
        self._ends: list[int] = [upto] if upto > 0 else []
        self.lost = False  # too scattered to tell

    def add(self, start: int, end: int) -> None:
        """Note that ``[start, end)`` was served."""
        if self.lost or end <= start:
            return
        # every range that touches [start, end) merges with it
        first = bisect.bisect_left(self._ends, start)
        last = bisect.bisect_right(self._starts, end)
        if first < last:
            start = min(start, self._starts[first])
            end = max(end, self._ends[last - 1])
        self._starts[first:last] = [start]
        self._ends[first:last] = [end]
        if len(self._starts) > MAX_SPANS:
            self.lost = True
            self._starts, self._ends = [], []

    def whole(self, size: int) -> bool:
        """Whether every byte of ``[0, size)`` was served (False once lost)."""
        if self.lost:
            return False
        if size <= 0:
            return True
        return bool(self._starts) and self._starts[0] == 0 and self._ends[0] >= size

    def note(self, size: int) -> str:
        """What a download's record says in place of a hash it could not vouch for."""
        if self.whole(size):
            return "read out of order"
        if self.lost:
            return "read out of order, too scattered to tell if whole"
        return "partial read"
