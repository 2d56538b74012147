"""The pipeline every file passes through, whichever protocol brought it.

An :class:`Upload` streams client bytes into a backend's :class:`WriteHandle`
(which writes under a temp name), hashing them with SHA-256 as they pass and
enforcing the size limit; only :meth:`Upload.commit` makes the file appear
under its final name, and only after its ``intend`` callback has made the
audit journal's intent record (SHA-256, size) durable: no record, no file.
A handle that flushes its data (a durable local file) starts that flush as
the intent is recorded, so the two overlap; the rename still waits for both.
A :class:`Download` hashes what it hands out when the
client reads the file front to back. For local files the hashing and the
file I/O run in a worker thread, ahead of a download (readahead.py) and
behind an upload (writebehind.py), so the loop meanwhile encrypts or
decrypts; the hash still covers exactly the bytes sent or stored. Both
report one :class:`TransferRecord` to the ``report`` callback when they end,
however they end; the gateway turns that into an audit event.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from conduit.audit import faults
from conduit.errors import Fault, StorageError, TransferRefused
from conduit.storage.base import ReadHandle, WriteHandle
from conduit.transfer.budget import ReorderBudget
from conduit.transfer.coverage import Coverage
from conduit.transfer.readahead import Pread, ReadAhead
from conduit.transfer.threads import INLINE_BYTES
from conduit.transfer.writebehind import Pwrite, WriteBehind

# Writes arriving ahead of the next expected offset are held (bounded) so the
# hash still covers every byte once, in order; beyond that we refuse rather
# than store bytes we could not vouch for. The gateway also bounds what a
# session and all sessions hold together (see budget.py).
MAX_REORDER_BYTES = 16 * 1024 * 1024


class Direction(StrEnum):
    UPLOAD = "upload"
    DOWNLOAD = "download"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """What one transfer did: enough for the audit event ``file.upload``/``file.download``."""

    transfer: str
    direction: Direction
    path: str
    bytes: int
    sha256: str | None
    duration: float
    outcome: Outcome
    error: str | None = None
    device_sha256: str | None = None
    atomic: bool = True


Report = Callable[[TransferRecord], Awaitable[None]]
#: "Still allowed?": asked with the bytes so far (upload) or the offset (download)
#: before a commit or a read; raises :class:`StorageError` to refuse it.
Check = Callable[[int], Awaitable[None]]
#: Write-ahead before the commit: (SHA-256, size, times to set or None); raises
#: :class:`StorageError` if the intent could not be recorded (nothing is committed).
Intend = Callable[[str, int, "tuple[float, float] | None"], Awaitable[None]]
#: Sees every byte once, in order, as it is written (inspection's stream checks:
#: a scan overlaps the upload instead of reading the file again afterwards).
Observe = Callable[[bytes], Awaitable[None]]


class _Transfer:
    def __init__(self, transfer: str, direction: Direction, path: str, report: Report) -> None:
        self.transfer = transfer
        self.direction = direction
        self.path = path
        self._report = report
        self._hash = hashlib.sha256()
        self._next = 0  # the next offset the hash expects
        self._started = time.monotonic()
        self._finished = False

    @property
    def bytes(self) -> int:
        return self._next

    async def _finish(
        self, outcome: Outcome, sha256: str | None, error: str | None, **custody: Any
    ) -> None:
        if self._finished:
            return
        self._finished = True
        await self._report(
            TransferRecord(
                transfer=self.transfer,
                direction=self.direction,
                path=self.path,
                bytes=self.bytes,
                sha256=sha256,
                duration=time.monotonic() - self._started,
                outcome=outcome,
                error=error,
                **custody,
            )
        )


class Upload(_Transfer):
    """A file arriving from a client. Writes must cover the file front to back."""

    def __init__(
        self,
        handle: WriteHandle,
        *,
        transfer: str,
        path: str,
        report: Report,
        max_size: int | None = None,
        check: Check | None = None,
        intend: Intend | None = None,
        reorder: ReorderBudget | None = None,
        observe: Observe | None = None,
    ) -> None:
        super().__init__(transfer, Direction.UPLOAD, path, report)
        self.observe = observe
        self.handle = handle
        self.max_size = max_size
        self.check = check
        self.intend = intend
        #: (atime, mtime) the client asked for, set after the commit; the commit's
        #: intent record names them so setting them needs no intent of its own
        self.times: tuple[float, float] | None = None
        self._ahead: dict[int, bytes] = {}
        #: this upload's own bound on held bytes; its ``held`` is what ``_ahead`` holds
        self._reorder = ReorderBudget(MAX_REORDER_BYTES, reorder)
        # A device relay proves custody against a hash of what it was sent:
        # ours covers exactly the bytes handed to the handle, once and in
        # order, so it is lent instead of the relay hashing them again.
        hash_from: Callable[[Callable[[], str]], None] | None = getattr(handle, "hash_from", None)
        if hash_from is not None:
            hash_from(self._sha256_of_handed_bytes)
        # A backend with a blocking write (local files) is written and hashed
        # behind, in a worker thread (see writebehind.py); others on the loop.
        pwrite: Pwrite | None = getattr(handle, "write_blocking", None)
        self._behind = (
            WriteBehind(pwrite, self._hash) if pwrite is not None and hash_from is None else None
        )

    async def _put(self, offset: int, data: bytes) -> None:
        """The next bytes in order: to the handle and the hash."""
        if self._behind is not None:
            await self._behind.write(offset, data)
        else:
            await self.handle.write(offset, data)
            self._hash.update(data)

    async def write(self, offset: int, data: bytes) -> None:
        if self._finished:
            raise StorageError(Fault.FAILURE, "upload already finished")
        end = offset + len(data)
        if self.max_size is not None and end > self.max_size:
            raise TransferRefused(
                Fault.FORBIDDEN,
                "file exceeds the size limit",
                f"write reaching {end} bytes exceeds max_size {self.max_size}",
            )
        if offset == self._next:
            await self._put(offset, data)
            self._next = end
            if self.observe is not None:
                await self.observe(data)
            while self._ahead and self._next in self._ahead:
                held = self._ahead.pop(self._next)
                self._reorder.give(len(held))
                await self._put(self._next, held)
                self._next += len(held)
                if self.observe is not None:
                    await self.observe(held)
        elif self._next < offset <= self._next + MAX_REORDER_BYTES and offset not in self._ahead:
            if not self._reorder.take(len(data)):
                raise TransferRefused(
                    Fault.FAILURE,
                    "too many bytes written out of order: upload refused",
                    f"write at offset {offset} ahead of {self._next}: reorder memory exhausted",
                )
            self._ahead[offset] = bytes(data)
        else:
            raise TransferRefused(
                Fault.UNSUPPORTED,
                "uploads must be written front to back (resume is not supported)",
                f"write at offset {offset}, expected {self._next}",
            )

    def _sha256_of_handed_bytes(self) -> str:
        if self._ahead:
            raise StorageError(Fault.FAILURE, "upload incomplete: bytes missing")
        return self._hash.hexdigest()

    async def digest(self) -> bytes | None:
        """SHA-256 of the bytes written so far, or None while some are held out of order."""
        if self._behind is not None:
            await self._behind.flush()
        return None if self._ahead else self._hash.copy().digest()

    async def commit(self) -> str:
        """Make the file appear under its final name; return its SHA-256."""
        if self._ahead:
            await self.abort("upload has a gap: bytes missing before the end")
            raise StorageError(Fault.FAILURE, "upload incomplete: bytes missing")
        try:
            if self._behind is not None:
                await self._behind.flush()  # every byte written (or its error) first
        except StorageError as exc:
            await self._fail(exc.detail)
            raise
        digest = self._hash.hexdigest()
        try:
            if self.check is not None:
                await self.check(self._next)  # a window may have closed since the open
            if self.intend is not None:
                # The file's data flush need not wait for the intent, only the
                # rename does (handle.commit waits for both): they overlap.
                start_flush: Callable[[], None] | None = getattr(self.handle, "start_flush", None)
                if start_flush is not None:
                    start_flush()
                await self.intend(digest, self._next, self.times)
                await faults.hold("after-intent", "file.upload")
            await self.handle.commit()
        except BaseException as exc:
            failed = exc.detail if isinstance(exc, StorageError) else None
            if getattr(self.handle, "in_place", False):
                why = failed or "its folder's flush was interrupted"
                await self._in_place(digest, f"in place, but {why}")
            elif failed is not None:
                await self._fail(failed)
            raise
        await faults.hold("after-effect", "file.upload")
        await self._done(digest)
        return digest

    async def _done(self, digest: str, note: str | None = None) -> None:
        """Record the file under its final name, with the storage's custody."""
        await self._finish(
            Outcome.SUCCESS,
            digest,
            note,
            device_sha256=self.handle.device_sha256,
            atomic=self.handle.atomic,
        )

    async def _in_place(self, digest: str, note: str) -> None:
        """The rename happened and what follows it failed or was cancelled (the
        folder's flush). The final name shows the whole file, so the record says
        ``success``, as recovery would from the disk, with the note why the
        name may not survive a crash; the client still hears the error, as it
        was promised a durable file. The handle lets go of its descriptors."""
        try:
            with contextlib.suppress(StorageError):
                await self.handle.abort()  # the temp name is gone: closes only
        finally:
            await self._done(digest, note)

    async def _release_held(self) -> None:
        """Give the bytes held out of order back to the session's budget, drop
        what waits to be written, and wait for a write in flight: the handle
        closes its descriptor next."""
        self._reorder.give(self._reorder.held)
        self._ahead.clear()
        if self._behind is not None:
            await self._behind.settle()

    async def abort(self, error: str) -> None:
        """Throw the upload away; nothing appears under the final name."""
        try:
            await self._release_held()
        finally:
            if not self._finished:
                try:
                    await self.handle.abort()
                finally:
                    await self._finish(Outcome.FAILED, None, error)

    async def _fail(self, error: str) -> None:
        try:
            await self._release_held()
        finally:
            with contextlib.suppress(StorageError):
                await self.handle.abort()
            await self._finish(Outcome.FAILED, None, error)


class Download(_Transfer):
    """A file going to a client; hashed when read front to back to its end."""

    def __init__(
        self,
        handle: ReadHandle,
        *,
        transfer: str,
        path: str,
        report: Report,
        check: Check | None = None,
    ) -> None:
        super().__init__(transfer, Direction.DOWNLOAD, path, report)
        self.handle = handle
        self.size = handle.size
        self.check = check
        self._refused: str | None = None
        self._sequential = True
        self._served = 0
        # A backend with a blocking read (local files) is read and hashed ahead
        # in a worker thread (see readahead.py); others are read on the loop.
        self._pread: Pread | None = getattr(handle, "read_blocking", None)
        self._reading: ReadAhead | None = None
        self._short = False  # a read on the loop came back short: the file shrank
        self._pending = b""  # the unsent rest of a block longer than a read asked
        self._coverage: Coverage | None = None  # what was sent, once out of order
        # A handle that hashes what it serves (the relay, off the event loop)
        # lends that hash: the bytes would otherwise be hashed twice.
        self._lent_sha256: Callable[[], Awaitable[str | None]] | None = getattr(
            handle, "served_sha256", None
        )

    async def read(self, offset: int, length: int) -> bytes:
        if self.check is not None:
            try:
                await self.check(offset)
            except StorageError as exc:
                self._refused = exc.detail
                raise
        if self._pread is not None and offset >= self.size:
            # The end of the file as it was opened (scp's C line promised that
            # size too): a file growing meanwhile is not read past it.
            data = b""
        elif self._pread is not None and self._sequential and offset == self._next:
            if self._reading is None and self.size - offset <= INLINE_BYTES:
                data = self._read_inline(offset, length)
            else:
                data = await self._read_ahead(offset, length)
        else:
            data = await self._read_here(offset, length)
        self._served += len(data)
        return data

    def _read_inline(self, offset: int, length: int) -> bytes:
        """The next bytes of a small file's rest, read and hashed here (a thread's
        hand-off costs more than both); the read-ahead's rules: never past the
        size as opened, and a short read (the file shrank) ends the download."""
        assert self._pread is not None
        if self._short:
            return b""
        want = min(length, self.size - offset)
        data = self._pread(offset, want)
        self._short = len(data) < want
        self._hash.update(data)
        self._next += len(data)
        return data

    async def _read_ahead(self, offset: int, length: int) -> bytes:
        """The next bytes from the worker thread, already hashed there."""
        if self._reading is None:
            assert self._pread is not None
            self._reading = ReadAhead(
                self._pread, self.size, self._hash, start=offset, block=length
            )
        parts: list[bytes] = []
        want = length
        while want > 0:
            if self._pending:
                block = self._pending
            else:
                block = await self._reading.next()
                if not block:
                    break
            parts.append(block[:want])
            self._pending = block[want:]
            want -= len(parts[-1])
        data = parts[0] if len(parts) == 1 else b"".join(parts)  # b"" at the end
        self._next += len(data)
        return data

    async def _read_here(self, offset: int, length: int) -> bytes:
        """A read on the loop: a backend without blocking reads, or random access."""
        data = await self.handle.read(offset, length)
        if self._pread is None and self._sequential and offset == self._next:
            if self._lent_sha256 is None:
                self._hash.update(data)
            self._next += len(data)
        elif self._sequential and data and offset + len(data) > self._next:
            # A client may re-read or skip (random access): the hash can no
            # longer vouch for the whole file, so we report none. An empty read
            # (a read-ahead past the end, as SFTP clients send) skips nothing.
            self._sequential = False
            self._coverage = Coverage(self._next)
            await self._stop_ahead()
        if self._coverage is not None:
            self._coverage.add(offset, offset + len(data))
        return data

    async def _stop_ahead(self) -> None:
        ahead, self._reading = self._reading, None
        self._pending = b""
        if ahead is not None:
            await ahead.settle()

    @property
    def bytes(self) -> int:
        return self._served

    async def close(self, error: str | None = None) -> None:
        try:
            try:
                await self._stop_ahead()  # no thread reads the descriptor once it closes
            finally:
                await self.handle.close()
        finally:
            complete = self._sequential and self._next == self.size and not self._pending
            error = error or self._refused
            sha256 = None
            if error is None and complete:
                lent = self._lent_sha256
                sha256 = self._hash.hexdigest() if lent is None else await lent()
            if sha256 is not None:
                await self._finish(Outcome.SUCCESS, sha256, None)
            elif error is None:
                # Read part of the file (a header, a resume): record what was sent.
                if complete:
                    note = "read out of order"  # the relay's own hash saw a skip
                elif self._coverage is not None:
                    note = self._coverage.note(self.size)
                else:
                    note = "partial read"
                await self._finish(Outcome.SUCCESS, None, note)
            else:
                await self._finish(Outcome.FAILED, None, error)
