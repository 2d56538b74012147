"""Write an upload's bytes to its temp file, and hash them, in a worker thread.

On a big upload the event loop spent about a quarter of its busy time on
SHA-256 and ``pwrite`` of the bytes it had just decrypted. Both release the
GIL, so a worker thread does them while the loop decrypts the next packets.

Order is what makes the hash honest: an upload has at most one job in
flight, and a job writes and hashes, in order, everything queued when it
started; the loop queues bytes in the order the pipeline accepts them. A
write that fails fails the upload at its next write or at its commit (the
same place a client learns of it from OpenSSH's sftp-server, whose writes
are not durable before the close either); nothing is committed unless every
queued byte was written.

Memory is bounded: an upload queues at most :data:`PER_UPLOAD` bytes, and
all uploads together :data:`SHARED_BYTES`; beyond that a write waits for the
job in flight, or, with nothing in flight, is written on the loop as before.

The first :data:`~conduit.transfer.threads.INLINE_BYTES` of an upload are written on the loop too
(nothing is queued or in flight then, so order holds): for a small file the
thread's hand-off and the loop's wake-up cost several times the ``pwrite``
and hash of its bytes (about 300 µs of CPU per file of a 4 KiB tree).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from conduit.errors import Fault, StorageError
from conduit.transfer.budget import ReorderBudget
from conduit.transfer.threads import INLINE_BYTES, executor, settle

PER_UPLOAD = 4 * 1024 * 1024
SHARED_BYTES = 64 * 1024 * 1024

Pwrite = Callable[[int, bytes], None]

_shared = ReorderBudget(SHARED_BYTES)


def shared_budget() -> ReorderBudget:
    """The process-wide budget (tests read how much of it is held)."""
    return _shared


class WriteBehind:
    """Bytes queued for ``pwrite`` (blocking, may raise) and ``sha``, in order."""

    def __init__(self, pwrite: Pwrite, sha: Any) -> None:
        self._pwrite = pwrite
        self._sha = sha
        self._queue: list[tuple[int, bytes]] = []
        self._queued = 0  # bytes queued or in flight, all reserved in the budget
        self._job: asyncio.Future[None] | None = None
        self._job_bytes = 0
        self._error: BaseException | None = None
        self._landed_event = asyncio.Event()
        self._budget = _shared

    @property
    def queued(self) -> int:
        return self._queued

    async def write(self, offset: int, data: bytes) -> None:
        """Queue ``data`` (or write it now); raises what an earlier write raised."""
        size = len(data)
        while True:
            if self._error is not None:
                raise self._error
            if offset + size <= INLINE_BYTES and self._job is None and not self._queue:
                self._work([(offset, data)])  # a small file's bytes, in order, here
                return
            if self._queued + size <= PER_UPLOAD and self._budget.take(size):
                self._queue.append((offset, data))
                self._queued += size
                self._start()
                return
            if self._job is None:
                # No room and nothing in flight (so nothing queued): in order, here.
                self._work([(offset, data)])
                return
            await self._landed()

    async def flush(self) -> None:
        """Until every queued byte is written and hashed; raises what a write raised."""
        while self._job is not None:
            await self._landed()
        if self._error is not None:
            raise self._error

    async def settle(self) -> None:
        """Drop what is queued and wait for the job in flight (an abort)."""
        self._release(sum(len(data) for _, data in self._queue))
        self._queue.clear()
        self._error = self._error or StorageError(Fault.FAILURE, "upload aborted")
        await settle(self._job)

    async def _landed(self) -> None:
        self._landed_event.clear()
        # Shielded: a cancelled writer leaves the job to land; settle() waits for it.
        await asyncio.shield(self._landed_event.wait())

    def _start(self) -> None:
        if self._job is not None or not self._queue or self._error is not None:
            return
        batch, self._queue = self._queue, []
        self._job_bytes = sum(len(data) for _, data in batch)
        loop = asyncio.get_running_loop()
        self._job = loop.run_in_executor(executor(), self._work, batch)
        self._job.add_done_callback(self._done)

    def _work(self, batch: list[tuple[int, bytes]]) -> None:
        """In the worker thread (or, without room, on the loop): write, then hash."""
        for offset, data in batch:
            self._pwrite(offset, data)
            self._sha.update(data)

    def _done(self, job: asyncio.Future[None]) -> None:
        self._job = None
        self._release(self._job_bytes)
        self._job_bytes = 0
        self._landed_event.set()
        error = None if job.cancelled() else job.exception()
        if error is not None and self._error is None:
            self._error = error
        if self._error is not None:
            self._release(sum(len(data) for _, data in self._queue))
            self._queue.clear()
            return
        self._start()

    def _release(self, size: int) -> None:
        if size:
            self._queued -= size
            self._budget.give(size)
