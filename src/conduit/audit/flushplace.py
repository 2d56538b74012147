"""Where a durable append (write + fdatasync) runs: on the event loop, or in
the journal's flusher thread (:mod:`conduit.audit.flusher`).

On the loop while the disk's flushes are fast: even the flusher thread's trip
costs ~0.1-0.2 ms of CPU on a small 2-core box, more than an fsync on an SSD.
In the thread when they are slow, so a slow disk does not stall every session.
The choice follows a moving average of the flushes timed on the loop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conduit.audit.journal import Item, Journal

#: A durable append that usually takes less than this runs on the event loop:
#: a hand-off to a thread costs more CPU than such a flush. (An upload's own
#: fsyncs always run in a thread, storage/localfiles.py: they overlap the
#: intent's flush.)
INLINE_SYNC_MAX = 0.001
#: Only flushes on the loop feed that average. The flusher thread's own timings
#: include its waits for the GIL while the loop is busy (on a busy gateway they
#: came out ~2-3x the same disk's flushes on the loop, and kept the auditor in
#: the thread for good). So while in the thread, one durable record is flushed
#: on the loop as a probe, at most every PROBE_SHARE times the last probe's cost
#: (and PROBE_MIN seconds): a slow disk stalls the loop ~2 % of the time at most.
#: No probe while the thread's last flush took PROBE_CEILING or more: GIL waits
#: do not reach that, so the disk itself is slow (or hanging), and a probe
#: would stall every session for as long.
PROBE_MIN = 0.5
PROBE_SHARE = 50
PROBE_CEILING = 0.05


class FlushPlace:
    """What the durable appends of one journal cost, and so where the next runs."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._cost = INLINE_SYNC_MAX  # unknown until measured: start in the thread
        self._probe_at = time.monotonic() + PROBE_MIN  # next flush on the loop (thread mode)
        self._thread_cost = 0.0  # the flusher thread's last append, GIL waits and all

    @property
    def in_thread(self) -> bool:
        """Durable appends belong in the flusher thread (only with fsync "always")."""
        return self.journal.fsync_policy == "always" and self._cost >= INLINE_SYNC_MAX

    def probe_due(self) -> bool:
        """In thread mode: the next durable record may be flushed on the loop."""
        return (
            INLINE_SYNC_MAX > 0
            and self._thread_cost < PROBE_CEILING
            and time.monotonic() >= self._probe_at
        )

    def append_here(self, items: list[Item]) -> list[int]:
        """A durable append on the loop, timed: it feeds the average."""
        started = time.perf_counter()
        try:
            return self.journal.append(items, rotate=False)
        finally:
            spent = time.perf_counter() - started
            self._cost += (spent - self._cost) / 8
            self._probe_at = time.monotonic() + max(PROBE_MIN, PROBE_SHARE * spent)

    def append_in_thread(self, items: list[Item], durable: bool) -> list[int]:
        """The flusher thread's append: its time only vetoes probes (PROBE_CEILING)."""
        started = time.perf_counter()
        try:
            return self.journal.append(items, rotate=False, durable=durable)
        finally:
            self._thread_cost = time.perf_counter() - started
