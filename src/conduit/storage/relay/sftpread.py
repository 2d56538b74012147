"""A device file read over SFTP: read ahead in large requests, hashed beside the loop.

A client downloading through the relay reads front to back in small pieces;
the handle asks the device for 255 KiB blocks, a few at once
(:mod:`~conduit.storage.relay.blocks`), and serves the pieces from them. What
it served front to back is hashed on a thread (:mod:`~conduit.storage.relay.hashing`)
and lent to the transfer's record as :meth:`SftpReadHandle.served_sha256`.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncssh

from conduit.storage.relay.blocks import READ_DEPTH, BlockReader, block_fetcher, depth, in_slot
from conduit.storage.relay.connection import DeviceLink, DeviceOps
from conduit.storage.relay.hashing import ThreadHasher


class SftpReadHandle(DeviceOps):
    """A device file open for reading.

    Read front to back (as every client downloading a file does), it is read
    ahead from the device in large requests and the client's small reads are
    served from those; a read elsewhere restarts the read-ahead there.

    While the reads go front to back the handle also hashes what it served,
    a whole block at a time on a worker thread (:mod:`.hashing`), and lends
    that to the transfer pipeline (:meth:`served_sha256`) instead of the
    pipeline hashing every 32 KiB piece on the event loop.
    """

    def __init__(self, link: DeviceLink, file: asyncssh.SFTPClientFile, size: int) -> None:
        super().__init__(link)
        self._file = file
        self.size = size
        self._reader: BlockReader | None = None
        self._buffer = b""
        self._buffer_offset = 0
        # One read at a time: the read-ahead's state spans awaits, and an SFTP
        # server may one day serve a client's requests concurrently.
        self._lock = asyncio.Lock()
        # The served stream: bytes [0, _served) went out front to back, and
        # [0, _hashed) of them are fed to the hasher (the rest is in _buffer).
        self._hasher: ThreadHasher | None = ThreadHasher()
        self._served = 0
        self._hashed = 0

    async def read(self, offset: int, length: int) -> bytes:
        try:
            async with self._lock:
                if self._hasher is not None:
                    # Before the read, so that a read cancelled here has taken nothing.
                    await self._hasher.room()
                return await self._read(offset, length)
        except (OSError, asyncssh.Error) as exc:
            await self._stop()
            raise self.fail(exc, "read") from None

    def _account(self, offset: int, size: int) -> None:
        """Keep the served stream front to back, or stop hashing it for good."""
        if offset == self._served:
            self._served += size
        elif offset + size > self._served:
            self._hasher = None  # a skip: no hash can vouch for what was served

    def _hash_buffer(self) -> None:
        """Hand the served, not yet hashed bytes of the current block to the hasher."""
        if self._hasher is None or self._hashed == self._served:
            return
        start = self._hashed - self._buffer_offset
        end = min(self._served - self._buffer_offset, len(self._buffer))
        if start < 0 or end < start:
            self._hasher = None  # cannot happen while reads go front to back
            return
        if end > start:
            self._hasher.feed(memoryview(self._buffer)[start:end])
            self._hashed += end - start

    async def _read(self, offset: int, length: int) -> bytes:
        end = self._buffer_offset + len(self._buffer)
        reader = self._reader
        if reader is None or not self._buffer_offset <= offset <= end:
            if reader is not None and reader.ended and offset >= end:
                return b""  # past the end (clients read ahead): nothing to restart
            await self._stop()
            fetch = block_fetcher(self.link, self._file, self.size)
            reader = self._reader = BlockReader(fetch, offset, depth=depth(self.link, READ_DEPTH))
            self._buffer_offset = offset
        parts: list[bytes] = []
        while length:
            start = offset - self._buffer_offset
            if start >= len(self._buffer):
                block = await reader.next()
                if not block:
                    break
                self._hash_buffer()
                self._buffer_offset += len(self._buffer)
                self._buffer = block
                continue
            piece = self._buffer[start : start + length]
            if self._hasher is not None:
                self._account(offset, len(piece))
            parts.append(piece)
            offset += len(piece)
            length -= len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def served_sha256(self) -> str | None:
        """SHA-256 of every byte :meth:`read` returned, if they went out front to back.

        ``None`` once a read skipped ahead or went elsewhere (the pipeline
        then vouches for nothing either). Call it after :meth:`close`.
        """
        self._hash_buffer()
        hasher = self._hasher
        return None if hasher is None else await hasher.hexdigest()

    async def _stop(self) -> None:
        reader, self._reader = self._reader, None
        self._hash_buffer()
        self._buffer = b""
        if reader is not None:
            await reader.close()

    async def close(self) -> None:
        try:
            await self._stop()
            if self._hasher is not None:
                await self._hasher.room(0)  # no hashing of this download goes on after close
        finally:
            with contextlib.suppress(OSError, asyncssh.Error):
                # in a slot: read-ahead given up on may still be in flight
                await in_slot(self.link, self._file.close)
