"""The journal's own flusher thread: durable appends off the event loop, cheaply.

With ``fsync = "always"`` on a disk whose flushes are slow, a durable append
(write + fdatasync) must not run on the event loop. ``asyncio.to_thread``
behind the committer task cost ~150-190 µs of CPU per durable record on a
small box (the committer's wake-up, a context copy, the executor's work item,
a concurrent future wrapped in an asyncio one, two task switches): more than
any other part of a record. This thread takes jobs from a C queue (no Python
lock per wait) and answers each batch with one ``call_soon_threadsafe``.

* **Group commit.** Every job queued when the thread comes to take work is
  written by one append: one fdatasync for all of them, seqs in queue order.
* **A failed write stops the line.** After an append raised, the jobs already
  queued behind it are *not* tried: they get :class:`Untried` and their owners
  go through the auditor's committer, which learned of the failure first (the
  ``failed`` hook runs on the loop before any job hears its answer). So
  nothing is written after a failure before the "writable again" alert, just
  as when the committer wrote every batch itself.
* **A dead thread fails closed.** If the thread ends for any other reason,
  every job queued or in hand is failed with :class:`FlusherDied` (the caller
  refuses, as for an unwritable journal) and the next job starts a new thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

from conduit.audit.journal import Item

log = logging.getLogger("conduit.audit")

#: ``write(items, durable) -> seqs``: the auditor's append (it keeps the cost average).
Write = Callable[[list[Item], bool], list[int]]


class Untried(Exception):
    """The job was queued behind a failed write and not attempted: go the slow way."""


class FlusherDied(RuntimeError):
    """The flusher thread ended unexpectedly; the job's records were not written."""


class Job:
    """Items for one append and the future their seqs go to. ``hold`` is the
    caller's for the ``failed`` hook (None: the caller handles a failure itself)."""

    __slots__ = ("durable", "future", "hold", "items")

    def __init__(
        self,
        items: list[Item],
        durable: bool,
        future: asyncio.Future[list[int]],
        hold: bool | None,
    ) -> None:
        self.items = items
        self.durable = durable
        self.future = future
        self.hold = hold


_RESUME = object()  # the loop knows of the failure: attempt what comes after this
_STOP = object()


class Flusher:
    """One thread that appends the journal's records for the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        write: Write,
        failed: Callable[[Exception, list[Job]], None],
        written: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._write = write
        #: on the loop, before the jobs' futures hear of it (it may answer them itself)
        self._failed = failed
        self._written = written  # on the loop, once per batch written
        self._jobs: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._alive = threading.Lock()
        self._stopped = False
        #: jobs handed over and not yet answered (counted on the loop): while
        #: any is out, the loop must not write the journal itself
        self.busy = 0

    def submit(
        self, items: list[Item], durable: bool = True, hold: bool | None = None
    ) -> asyncio.Future[list[int]]:
        """Queue ``items`` for one append; the future gets their seqs or the error."""
        if self._stopped:
            raise RuntimeError("the audit flusher is stopped")
        future: asyncio.Future[list[int]] = self._loop.create_future()
        with self._alive:  # a dying thread takes every job queued before it said so
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-flush", daemon=True)
                self._thread.start()
            self.busy += 1
            self._jobs.put(Job(items, durable, future, hold))
        return future

    async def stop(self) -> None:
        """Let the thread finish what is queued, then end it."""
        self._stopped = True
        thread = self._thread
        if thread is None:
            return
        self._jobs.put(_STOP)
        await asyncio.to_thread(thread.join)

    # -- in the thread ------------------------------------------------------------

    def _run(self) -> None:
        held: list[Job] = []  # taken and not yet answered
        try:
            halted = False
            while True:
                got = self._take(block=True)
                held = [j for j in got if isinstance(j, Job)]
                if halted:  # queued before the loop knew of the failure: not tried
                    self._answer(held, None, Untried())
                    halted = _RESUME not in got
                elif held:
                    halted = self._append(held)
                held = []
                if _STOP in got:
                    return
        except BaseException as exc:  # a bug, or a BaseException from below
            log.error("audit flusher thread ended: %r", exc, exc_info=exc)
            with self._alive:
                self._thread = None  # the next job starts a new thread
                got = self._take(block=False)
            # nothing may be left waiting for a thread that is gone
            held += [j for j in got if isinstance(j, Job)]
            self._answer(held, None, FlusherDied(f"audit flusher thread ended: {exc!r}"))

    def _take(self, block: bool) -> list[object]:
        """What is queued (waiting for the first if ``block``), markers included."""
        got: list[object] = []
        try:
            got.append(self._jobs.get(block=block))
            while True:
                got.append(self._jobs.get_nowait())
        except queue.Empty:
            pass
        return got

    def _append(self, work: list[Job]) -> bool:
        """Write the jobs' items in one append; True if it failed (halt)."""
        items = [item for job in work for item in job.items]
        try:
            seqs = self._write(items, any(job.durable for job in work))
        except Exception as exc:
            self._answer(work, None, exc)
            return True
        self._answer(work, seqs, None)
        return False

    def _answer(self, work: list[Job], seqs: list[int] | None, exc: Exception | None) -> None:
        if work and not self._loop.is_closed():  # closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._settle, work, seqs, exc)

    # -- on the loop ----------------------------------------------------------------

    def _settle(self, work: list[Job], seqs: list[int] | None, exc: Exception | None) -> None:
        if seqs is None:
            assert exc is not None
            if not isinstance(exc, Untried):
                self._failed(exc, work)
                if not isinstance(exc, FlusherDied):
                    self._jobs.put(_RESUME)  # the thread tries what comes after this
        self.busy -= len(work)
        start = 0
        for job in work:
            end = start + len(job.items)
            if not job.future.done():  # a cancelled waiter: its records are written all the same
                if seqs is None:
                    job.future.set_exception(exc)  # type: ignore[arg-type]
                else:
                    job.future.set_result(seqs[start:end])
            start = end
        if seqs is not None:
            self._written()
