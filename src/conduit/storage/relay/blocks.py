"""Large SFTP requests to a device, several in flight: what makes a relay fast.

A client talking to the gateway sends small requests (OpenSSH's ``scp`` and
``sftp``: 32 KiB each), and the gateway's SFTP server handles them one after
another. Passing each one on to the device as it came made every 32 KiB a
round trip to the device, and eight times as many requests (each a packet to
encrypt, a task, a reply to match) as the device needs: OpenSSH's
``sftp-server`` takes 255 KiB per request.

- :class:`BlockReader` reads a device file front to back in ``BLOCK``-byte
  requests with up to ``depth`` of them in flight, handing the blocks out in
  order: the relay's read-ahead for downloads and its read-back for custody.
- :class:`WriteGather` joins consecutive small writes into ``BLOCK``-byte
  ones before they are sent.

Every request still takes one of the device's ``max_concurrency`` slots
(the caller's ``fetch`` does), so a device never sees more requests at once
than its entry allows; ``depth`` only says how far ahead a reader may ask.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncssh

from conduit.storage.relay.connection import DeviceLink

BLOCK = 255 * 1024
"""Bytes per request: OpenSSH sftp-server's largest read and write."""
READ_DEPTH = 8
"""Block reads one reader asks for ahead (memory: READ_DEPTH x BLOCK)."""

Fetch = Callable[[int, int], Awaitable[bytes]]


def depth(link: DeviceLink, most: int) -> int:
    """Requests one transfer keeps going: no more than the device has slots for.

    More would only wait for a slot while holding a block each (memory per
    transfer, times every transfer to every device), and gain nothing.
    """
    return max(1, min(most, link.device.max_concurrency))


T = TypeVar("T")


async def in_slot(link: DeviceLink, request: Callable[[], Awaitable[T]]) -> T:
    """Run one device request in one of ``link``'s slots; cancelling waits no longer.

    asyncssh's file ``read`` and ``write`` run inner tasks of their own:
    cancelling one mid-request orphans them, and their errors (the link
    died, the file ended) are then logged as never retrieved. The request
    therefore runs on, shielded, its outcome collected when it ends, and
    it keeps its slot until then, so ``max_concurrency`` holds even for
    requests their caller gave up on.
    """
    await link.acquire_slot()
    try:
        task = asyncio.ensure_future(request())
    except BaseException:
        link.release_slot()
        raise

    def done(task: asyncio.Future[T]) -> None:
        link.release_slot()
        if not task.cancelled():
            task.exception()  # collected: the caller may have stopped waiting

    task.add_done_callback(done)
    return await asyncio.shield(task)


def open_args(sftp: asyncssh.SFTPClient) -> dict[str, int]:
    """How to open a device file so that a slot is one SFTP request at a time.

    asyncssh's ``SFTPClientFile.read`` and ``write`` run every call through
    a parallel reader or writer that splits it at the server's limits: for a
    255 KiB block that is one request anyway, plus a task, an
    ``asyncio.wait`` and (reading) two more copies of the block, ~13 % of a
    relay download's event loop. Opened with ``block_size=0`` a call is the
    one SFTP request. That needs a device whose ``limits@openssh.com``
    takes a whole block each way (OpenSSH 8.7 and later).

    Any other device keeps asyncssh's splitting into its safe 16 KiB
    requests, but one at a time (``max_requests=1``): a block would
    otherwise be sixteen requests in flight on one slot, and
    ``max_concurrency`` promises the device at most that many requests at
    once. Such a device is slower through the relay; raise its
    ``max_concurrency`` if it can take more.
    """
    limits = sftp.limits
    if limits.max_read_len >= BLOCK and limits.max_write_len >= BLOCK:
        return {"block_size": 0}
    return {"block_size": -1, "max_requests": 1}


async def read_exactly(
    file: asyncssh.SFTPClientFile, offset: int, length: int, end: int | None
) -> bytes:
    """``length`` bytes at ``offset``, fewer only where the file ends.

    A server may answer a read with fewer bytes than asked (SFTP allows it,
    and a file opened with ``block_size=0`` passes the answer on as is): the
    rest is asked for again, as asyncssh's own reader does; a longer answer
    than asked is a bad message. A short answer reaching ``end`` (the size
    the file had when opened, or the bytes written to it) is taken as the
    end without asking again: the common case, the file's last block, then
    costs no extra round trip.
    """
    data = _checked(await file.read(length, offset), length)
    parts = [data]
    got = len(data)
    while data and got < length and (end is None or offset + got < end):
        data = _checked(await file.read(length - got, offset + got), length - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _checked(data: object, asked: int) -> bytes:
    """A read's answer, refused if longer than asked: a device (hostile or broken)
    must not shift every byte after it, and asyncssh passes a one-request
    answer on as it came."""
    if not isinstance(data, bytes):
        return b""
    if len(data) > asked:
        raise asyncssh.SFTPBadMessage(f"device answered {len(data)} bytes to a read of {asked}")
    return data


def block_fetcher(link: DeviceLink, file: asyncssh.SFTPClientFile, end: int | None = None) -> Fetch:
    """``fetch(offset, length)`` for a :class:`BlockReader`: one request in one slot.

    ``end``: where the file is expected to end (see :func:`read_exactly`);
    None when unknown: a short answer is then always asked again.
    """

    async def fetch(offset: int, length: int) -> bytes:
        return await in_slot(link, lambda: read_exactly(file, offset, length, end))

    return fetch


class BlockReader:
    """A device file read from ``start`` in order, up to ``depth`` blocks ahead.

    ``fetch(offset, length)`` returns ``length`` bytes unless the file ends
    first (asyncssh's reader re-asks for the rest of a short answer), so a
    short block is the end of the file: nothing after it is handed out, even
    if a read issued ahead found bytes there (the file grew meanwhile).
    """

    def __init__(
        self, fetch: Fetch, start: int = 0, *, block: int = BLOCK, depth: int = READ_DEPTH
    ) -> None:
        self._fetch = fetch
        self._block = block
        self._depth = max(1, depth)
        self._next = start  # the offset of the next request to issue
        self.position = start
        """The offset of the next byte :meth:`next` hands out."""
        self._pending: deque[asyncio.Task[bytes]] = deque()
        self.ended = False
        """True once a short block showed where the file ends (or after close)."""

    def _fill(self) -> None:
        while not self.ended and len(self._pending) < self._depth:
            self._pending.append(asyncio.ensure_future(self._fetch(self._next, self._block)))
            self._next += self._block

    async def next(self) -> bytes:
        """The next block in order; ``b""`` once the file has ended."""
        if self.ended and not self._pending:
            return b""
        self._fill()
        task = self._pending.popleft()
        try:
            data = await task
        except BaseException:
            await self.close()
            raise
        if len(data) < self._block:
            await self.close()  # the file ended: nothing beyond is handed out
        self.position += len(data)
        self._fill()
        return data

    async def close(self) -> None:
        """Stop reading ahead; nobody waits for the requests in flight any more."""
        self.ended = True
        pending, self._pending = self._pending, deque()
        for task in pending:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*pending, return_exceptions=True)


class WriteGather:
    """Consecutive writes joined into blocks of exactly ``block`` bytes (the last one shorter).

    :meth:`add` returns the blocks that are ready to send as
    ``(offset, data)``; :meth:`flush` returns what is left. A write that
    does not continue the gathered bytes (an out-of-order SFTP write) ends
    the current block, so the bytes and offsets sent are always exactly the
    ones written.

    A write that does not fit in the block's room is cut at the block's end
    and its rest starts the next block: OpenSSH's 32 KiB pieces made 224 KiB
    blocks before (seven pieces, an eighth would overflow), 14 % more device
    requests than 255 KiB ones, each a round trip that holds a
    ``max_concurrency`` slot. The cut is a memoryview: the one copy is the
    block's join, as before.
    """

    def __init__(self, block: int = BLOCK) -> None:
        self._block = block
        self._parts: list[bytes | memoryview] = []
        self._start = 0
        self._size = 0

    def add(self, offset: int, data: bytes) -> list[tuple[int, bytes]]:
        ready: list[tuple[int, bytes]] = []
        if self._size and offset != self._start + self._size:
            ready.extend(self.flush())  # not a continuation: never bridged
        piece: bytes | memoryview = data
        while len(piece):
            if not self._size:
                self._start = offset
                if len(piece) == self._block:
                    ready.append((offset, bytes(piece)))  # already a block: bytes, no copy
                    break
            room = self._block - self._size
            head: bytes | memoryview = piece
            if len(piece) > room:
                view = memoryview(piece)
                head, piece = view[:room], view[room:]
            else:
                piece = b""
            self._parts.append(head)
            self._size += len(head)
            offset += len(head)
            if self._size == self._block:
                ready.extend(self.flush())
        return ready

    @property
    def pending(self) -> int:
        """Bytes gathered and not yet handed out."""
        return self._size

    def flush(self) -> list[tuple[int, bytes]]:
        if not self._size:
            return []
        parts, self._parts = self._parts, []
        only = parts[0]
        data = only if len(parts) == 1 and isinstance(only, bytes) else b"".join(parts)
        self._size = 0
        return [(self._start, data)]
