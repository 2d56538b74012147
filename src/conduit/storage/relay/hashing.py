"""SHA-256 of a relayed stream, computed beside the event loop instead of on it.

The gateway serves every connection from one event loop; SHA-256 here runs
at a few hundred MB/s, so hashing a 1 GiB download on the loop stops all of
its other work for seconds. hashlib releases the GIL while it hashes more
than 2 KiB at once, so the relay's large device blocks (255 KiB) are hashed
on a small thread pool while the loop moves the next ones.

:class:`ThreadHasher` keeps the order of the bytes fed to it (one drain job
per hasher at a time, taking the queue front to back), never blocks
:meth:`~ThreadHasher.feed` (so a cancelled caller cannot lose a block: the
hash is either of every byte fed or the caller never asks for it), and is
bounded by the caller waiting on :meth:`~ThreadHasher.room`. The thread only
ever holds ``bytes`` (or views of them), which live as long as it needs them:
nothing it touches can be closed under it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

INLINE = 64 * 1024
"""Smaller pieces are hashed at once on the caller's thread: a hand-off costs more."""
BATCH = 1024 * 1024
"""Bytes queued before a thread takes them: each hand-off costs the loop a wake-up."""
MAX_QUEUED = 3 * 1024 * 1024
"""Bytes a hasher may lag behind before :meth:`ThreadHasher.room` makes its caller wait."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="conduit-sha256"
            )
        return _pool


def _forget_pool() -> None:
    # A forked worker process has none of its parent's threads: start afresh.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


class ThreadHasher:
    """SHA-256 of the bytes fed to it, in the order fed, mostly on a worker thread."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._lock = threading.Lock()
        self._queue: deque[bytes | memoryview] = deque()
        self._queued = 0
        self._job: Future[None] | None = None

    @property
    def queued(self) -> int:
        """Bytes fed and not hashed yet."""
        with self._lock:
            return self._queued

    def feed(self, data: bytes | memoryview) -> None:
        """Add ``data`` after everything fed before; never blocks, never awaits."""
        if not len(data):
            return
        with self._lock:
            if self._job is None and not self._queue and len(data) < INLINE:
                self._hash.update(data)  # nothing queued ahead of it: in order
                return
            self._queue.append(data)
            self._queued += len(data)
            if self._job is not None or self._queued < BATCH:
                return
        self._start()

    def _start(self) -> None:
        """Start a drain job unless one runs (or nothing waits)."""
        with self._lock:
            if self._job is not None or not self._queue:
                return
            self._job = job = Future[None]()
            job.set_running_or_notify_cancel()  # a waiter giving up cannot cancel it
        try:
            _executor().submit(self._drain, job)
        except BaseException as exc:  # no thread to be had (interpreter exiting)
            with self._lock:
                self._job = None
            job.set_exception(exc)
            raise

    def _drain(self, job: Future[None]) -> None:
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        self._job = None
                        break
                    data = self._queue.popleft()
                self._hash.update(data)  # the GIL is released while it hashes
                with self._lock:
                    self._queued -= len(data)
        except BaseException as exc:  # pragma: no cover - hashlib does not fail on bytes
            job.set_exception(exc)
            raise
        job.set_result(None)

    async def room(self, most: int = MAX_QUEUED) -> None:
        """Wait while more than ``most`` bytes are waiting to be hashed."""
        while True:
            with self._lock:
                if self._queued <= most:
                    return
                job = self._job
            if job is None:
                self._start()
                continue
            await asyncio.wrap_future(job)

    async def hexdigest(self) -> str:
        """The digest of everything fed so far, once it is all hashed."""
        await self.room(0)
        with self._lock:
            return self._hash.hexdigest()
