"""Read a download front to back in a worker thread, hashing as it goes.

A download's SHA-256 used to be computed on the event loop as each block
was handed out: on a 1 GiB download it was the loop's largest single cost,
while the second core sat idle. ``hashlib`` and ``os.pread`` both release
the GIL for blocks this size, so a worker thread reads *and* hashes the next
blocks while the loop encrypts and sends the current one.

The hash stays exactly the hash of the bytes sent: the thread hashes a
block and the loop sends that same ``bytes`` object, never a second read of
the file. Blocks are read in order, up to :data:`BATCH` per job (each job
costs the loop a submit and a wake-up), one job in flight per download, so
the hash sees every byte once, in order. The thread never
reads past the size the file had when it was opened; a short read (the file
shrank) ends the read-ahead there, and the download is then incomplete and
reports no hash.

A small file (at most :data:`~conduit.transfer.threads.INLINE_BYTES` left to read) is not worth a
thread: handing a 4 KiB read to the pool and waking the loop when it lands
cost several times the read and its hash (about 250 µs of CPU against
10 µs, measured per file of a 4 KiB tree). The download reads and hashes
it on the loop instead, under the same rules (see
:meth:`conduit.transfer.pipeline.Download.read`).

Memory is bounded twice: a download holds at most :data:`DEPTH` blocks of
at most :data:`MAX_BLOCK` bytes, and every block but the one it waits for
is counted against one process-wide :class:`~conduit.transfer.budget.ReorderBudget`
of :data:`SHARED_BYTES` (the first is what the old code held anyway: the
block being sent). :meth:`ReadAhead.settle` waits for the job in flight, so
a descriptor is never closed (and its number reused) under a running read.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from conduit.transfer.budget import ReorderBudget
from conduit.transfer.threads import executor, settle

#: Blocks one download may hold read ahead (in flight included), and read per job.
DEPTH = 8
BATCH = 4
#: A block is the size of the client's first read, within these bounds: SFTP
#: and scp clients then get one block per read, no slicing or joining.
MIN_BLOCK = 64 * 1024
MAX_BLOCK = 1024 * 1024
#: Bytes all downloads together may hold, beyond the one block each waits for.
SHARED_BYTES = 64 * 1024 * 1024

Pread = Callable[[int, int], bytes]

_shared = ReorderBudget(SHARED_BYTES)


def shared_budget() -> ReorderBudget:
    """The process-wide budget (tests read how much of it is held)."""
    return _shared


class ReadAhead:
    """The blocks of ``[start, size)`` of a file, read and hashed ahead in a thread.

    ``pread`` is a blocking positional read (it may raise); ``sha`` is
    updated in the worker thread only, block by block, in order.
    """

    def __init__(
        self, pread: Pread, size: int, sha: Any, *, start: int, block: int, depth: int = DEPTH
    ) -> None:
        self._pread = pread
        self._size = size
        self._sha = sha
        self._block = max(MIN_BLOCK, min(MAX_BLOCK, block))
        self._depth = max(1, depth)
        # blocks read and hashed, not yet handed out, each with what it holds in the budget
        self._ready: deque[tuple[bytes, int]] = deque()
        self._ahead = start  # where the next job reads
        self._job: asyncio.Future[list[bytes]] | None = None
        self._plan: list[tuple[int, int]] = []  # the job's blocks: (size, reserved)
        self._held = 0  # reserved bytes (ready + in flight)
        self._end = start >= size  # no more jobs: size reached, short read or error
        self._error: BaseException | None = None
        self._closed = False
        self._arrived: asyncio.Event = asyncio.Event()
        self._budget = _shared
        self._start()

    @property
    def held(self) -> int:
        """Bytes this read-ahead holds against the shared budget."""
        return self._held

    def _start(self) -> None:
        if self._closed or self._end or self._job is not None:
            return
        plan: list[tuple[int, int]] = []
        offset = self._ahead
        while len(plan) < BATCH and len(self._ready) + len(plan) < self._depth:
            size = min(self._block, self._size - offset)
            if size <= 0:
                break
            reserved = 0
            if self._ready or plan:
                # Beyond the first block: only with room in the shared budget.
                if not self._budget.take(size):
                    break
                reserved = size
                self._held += size
            plan.append((size, reserved))
            offset += size
        if not plan:
            return
        self._plan = plan
        loop = asyncio.get_running_loop()
        self._job = loop.run_in_executor(executor(), self._work, self._ahead, plan)
        self._job.add_done_callback(self._landed)

    def _work(self, offset: int, plan: list[tuple[int, int]]) -> list[bytes]:
        """In the worker thread: a few blocks, read and hashed in order.

        Several per job: each job costs the loop a submit and a wake-up."""
        blocks = []
        for size, _ in plan:
            data = self._pread(offset, size)
            if data:
                self._sha.update(data)
                blocks.append(data)
            if len(data) < size:
                break  # the file shrank: read no further
            offset += size
        return blocks

    def _landed(self, job: asyncio.Future[list[bytes]]) -> None:
        self._job = None
        plan, self._plan = self._plan, []
        self._arrived.set()
        blocks: list[bytes] = []
        if job.cancelled() or self._closed:
            self._end = True
        elif job.exception() is not None:
            self._error, self._end = job.exception(), True
        else:
            blocks = job.result()
        for index, (size, reserved) in enumerate(plan):
            if index >= len(blocks):
                self._release(reserved)  # not read: the file ended or the job failed
                continue
            data = blocks[index]
            self._ready.append((data, reserved))
            self._ahead += len(data)
            if len(data) < size:
                self._end = True  # the file shrank
        if self._ahead >= self._size or len(blocks) < len(plan):
            self._end = True  # the end of the file as it was opened, or earlier
        self._start()

    def _release(self, size: int) -> None:
        if size:
            self._held -= size
            self._budget.give(size)

    async def next(self) -> bytes:
        """The next block, in order; ``b""`` at its end. Raises what a read raised."""
        while not self._ready:
            if self._error is not None:
                raise self._error
            if self._end and self._job is None:
                return b""
            self._start()
            job = self._job
            if job is None:
                return b""  # closed
            self._arrived.clear()
            # Shielded: a cancelled reader leaves the job to land; settle() waits for it.
            await asyncio.shield(self._arrived.wait())
        data, reserved = self._ready.popleft()
        self._release(reserved)
        self._start()
        return data

    async def settle(self) -> None:
        """Stop reading ahead, wait for the job in flight, drop what is held."""
        self._closed = True
        self._release(sum(reserved for _, reserved in self._ready))
        self._ready.clear()  # the job in flight gives its share back when it lands
        await settle(self._job)
