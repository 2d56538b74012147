"""The local backend's file-level parts: errors, stats and the two handles.

Shared by :mod:`conduit.storage.local` (which resolves names, confined, and
hands out these handles) and :mod:`conduit.storage.localdir` (paged
listings). A write handle owns the atomic-upload discipline: bytes go to a
hidden temp name beside the final one, which changes only in ``commit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import secrets
import stat as st
from collections.abc import Callable
from typing import Any

from conduit.errors import Fault, StorageError
from conduit.storage.base import Stat

TEMP_PREFIX = ".conduit-part-"
#: Marks this process's temp files: the start-up sweep runs while the gateway
#: already serves, and must remove only what an earlier process left behind.
#: A gateway's worker processes carry their supervisor's tag (see
#: gateway/workers.py), so its sweep leaves their live uploads alone too.
_INHERITED = os.environ.get("CONDUIT_PROCESS_TAG", "")
PROCESS_TAG = (
    _INHERITED
    if len(_INHERITED) == 8 and all(c in "0123456789abcdef" for c in _INHERITED)
    else secrets.token_hex(4)
)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_ERRNO_FAULTS = {
    errno.ENOENT: Fault.NOT_FOUND,
    errno.EEXIST: Fault.EXISTS,
    errno.ENOTEMPTY: Fault.NOT_EMPTY,
    errno.EISDIR: Fault.IS_A_DIRECTORY,
    errno.ENOTDIR: Fault.NOT_A_DIRECTORY,
    errno.ENOSPC: Fault.NO_SPACE,
    errno.EDQUOT: Fault.NO_SPACE,
    errno.EFBIG: Fault.NO_SPACE,
    errno.EACCES: Fault.FORBIDDEN,
    errno.EPERM: Fault.FORBIDDEN,
    errno.ELOOP: Fault.FORBIDDEN,
    errno.EROFS: Fault.FORBIDDEN,
    errno.EXDEV: Fault.UNSUPPORTED,
}


def fault_of(exc: OSError) -> StorageError:
    """An OSError as a StorageError whose text never holds a path."""
    if exc.errno == errno.ENAMETOOLONG:
        return StorageError(Fault.FAILURE, "name too long")
    fault = _ERRNO_FAULTS.get(exc.errno or 0, Fault.FAILURE)
    return StorageError(fault, detail=f"{fault.value} ({errno.errorcode.get(exc.errno or 0)})")


def stat_of(s: os.stat_result) -> Stat:
    return Stat(size=s.st_size, mode=s.st_mode, mtime=s.st_mtime, atime=s.st_atime)


class ReadFile:
    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    async def read(self, offset: int, length: int) -> bytes:
        return self.read_blocking(offset, length)

    def read_blocking(self, offset: int, length: int) -> bytes:
        """The same read for a worker thread (a download's read-ahead,
        transfer/readahead.py): a download waits for it before closing."""
        try:
            return os.pread(self.fd, length, offset)
        except OSError as exc:
            raise fault_of(exc) from None

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


#: A durable upload's written bytes are handed to the disk every this many
#: bytes, as they arrive, instead of all at once by the commit's fsync.
WRITEBACK_EVERY = 8 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None  # not Linux: the commit's fsync does it all, as before
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_start_writeback = _sync_file_range()


class WriteFile:
    """An upload under a temp name; the final name changes only in :meth:`commit`."""

    atomic = True
    device_sha256: str | None = None

    def __init__(self, dir_fd: int, temp: str, final: str, fd: int, durable: bool) -> None:
        self.durable = durable
        self.dir_fd = dir_fd
        self.temp = temp
        self.final = final
        self.fd = fd
        self.done = False
        self._handed = 0  # bytes before this offset were handed to the disk
        self._flushing: asyncio.Future[None] | None = None  # the data's fsync, once started
        # The final name shows the file: set by the rename, before the folder's
        # flush, which can still fail or be cancelled (see Upload.commit).
        self.in_place = False

    async def write(self, offset: int, data: bytes) -> None:
        self.write_blocking(offset, data)

    def write_blocking(self, offset: int, data: bytes) -> None:
        """The same write for a worker thread (an upload's write-behind,
        transfer/writebehind.py): an upload waits for it before closing.

        A durable upload also starts the disk writing what it has so far,
        every :data:`WRITEBACK_EVERY` bytes (``sync_file_range``, which does
        not wait): with gigabytes of RAM nothing else writes a big upload
        back before the commit, whose fsync then wrote it all while the
        client waited (about 1 s per GiB here). The fsync still makes it
        durable; it only finds less left to do."""
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            raise fault_of(exc) from None
        start, pending = self._handed, offset - self._handed
        if self.durable and _start_writeback is not None and pending >= WRITEBACK_EVERY:
            _start_writeback(self.fd, start, pending, _SYNC_FILE_RANGE_WRITE)  # errors: fsync's
            self._handed = offset

    def start_flush(self) -> None:
        """Start the fsync that makes the written bytes durable, and return at once.

        The pipeline calls it when the last byte is written, just before it
        records the commit's intent: the two flushes then overlap instead of
        running one after the other on the client's path. Only the intent
        must be durable before the rename (the write-ahead rule), and
        :meth:`commit` renames only after this flush too has returned. The job
        goes to the executor here, not when a task first runs, so it overlaps
        an intent flushed on the event loop as well. Nothing to do for a
        non-durable upload, or once started."""
        if self.durable and self._flushing is None and not self.done:
            self._flushing = _flush_started(self.fd)

    async def commit(self) -> None:
        if self.done:
            raise StorageError(Fault.FAILURE, "upload already finished")
        try:
            if self.durable:
                self.start_flush()  # if the pipeline did not: then abort waits for it too
                await flushed(self.fd, self._flushing)
            os.close(self.fd)
            self.fd = -1
            try:
                existing = os.stat(self.final, dir_fd=self.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if st.S_ISLNK(existing.st_mode):
                    raise StorageError(Fault.FORBIDDEN, "target is a symbolic link")
                if st.S_ISDIR(existing.st_mode):
                    raise StorageError(Fault.IS_A_DIRECTORY)
            os.rename(self.temp, self.final, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            self.in_place = True  # whatever the folder's flush does next
            if self.durable:
                await flushed(self.dir_fd)
        except OSError as exc:
            await self.abort()
            raise fault_of(exc) from None
        except StorageError:
            await self.abort()
            raise
        self.done = True
        os.close(self.dir_fd)

    async def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            await landed(self._flushing)  # the descriptor is not closed under its fsync
        finally:
            if self.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
            with contextlib.suppress(OSError):
                os.unlink(self.temp, dir_fd=self.dir_fd)
            with contextlib.suppress(OSError):
                os.close(self.dir_fd)


def _flush_started(fd: int) -> asyncio.Future[None]:
    return asyncio.get_running_loop().run_in_executor(None, os.fsync, fd)


async def flushed(fd: int, started: asyncio.Future[None] | None = None) -> None:
    """``fsync(fd)`` in a worker thread: a flush takes 0.2-1 ms (far more on a
    busy disk), and on the event loop it stalled every other session's
    transfer for that long. Durability is the same; only the waiting moves.
    ``started``: that fsync, already begun (:meth:`WriteFile.start_flush`).

    Cancelling the caller does not abandon the flush: the descriptor stays
    open (and the commit unfinished) until the thread has returned, so it is
    never closed, and its number reused, under a running fsync.
    """
    flush = started if started is not None else _flush_started(fd)
    try:
        await asyncio.shield(flush)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait([flush])
        raise


async def landed(job: asyncio.Future[Any] | None) -> None:
    """Wait until ``job`` (an fsync, a read or write in a worker thread) has
    returned, whatever it raised: whoever would have reported its error is
    not waiting for it any more. A cancelled caller still waits for the job
    to land, then the cancellation is raised: the job is bounded, and a
    descriptor closed under it, its number reused, is not safe.
    (transfer/threads.py's jobs are waited for with this too.)"""
    cancelled = False
    while job is not None and not job.done():
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break
    if job is not None and job.done() and not job.cancelled():
        job.exception()  # seen: not logged as "never retrieved"
    if cancelled:
        raise asyncio.CancelledError


def temp_name(final: str) -> str:
    stem = f"{TEMP_PREFIX}{PROCESS_TAG}{secrets.token_hex(4)}-"
    room = 255 - len(stem.encode())
    tail = final.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return stem + tail
