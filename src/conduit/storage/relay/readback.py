"""Read-back custody overlapped with the upload: each block read back once the device has it.

A device with no ``sha256`` command proves custody by the relay reading the
uploaded file back and hashing it. Done after the last write, that read-back
was a second transfer of the whole file, one after the other: on a 256 MiB
upload ~0.6-0.9 s of device round trips the client waited for at the end.

Here the read-back runs beside the upload. :class:`WrittenPrefix` follows
the device's acknowledgements: a block is read back only once every write
before its end has been answered by the device, so the read sees the bytes
the device took. The tail (a last partial block, and the end of the file,
where a read must find nothing more) is read only after :meth:`WrittenPrefix.finish`,
when every write has settled and the write handle is closed, exactly as
the read-back after the upload did. An upload whose writes do not go front
to back (a raw SFTP client writing out of order) gets no overlap: its
read-back waits for the end.

What is compared is unchanged: the SHA-256 of the device's bytes, read over
SFTP, against the hash of what was sent. Reads and writes share the device's
``max_concurrency`` slots; the read-back holds at most ``depth`` blocks plus
what its hasher queues (``hashing.MAX_QUEUED``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from conduit.storage.relay.hashing import ThreadHasher


class WrittenPrefix:
    """How much of an upload, front to back without a gap, the device has answered."""

    def __init__(self) -> None:
        self._issued: deque[tuple[asyncio.Future[None], int]] = deque()
        self.sent = 0
        """Where the bytes sent so far end: where the file ends once they all land."""
        self.acked = 0
        """Bytes from offset 0 whose writes all succeeded."""
        self.final: int | None = None
        """The upload's end, once every write has settled (see :meth:`finish`)."""
        self.in_order = True
        """False once a write went elsewhere than the end: reads then wait for the end."""
        self._changed: asyncio.Future[None] | None = None

    def issued(self, write: asyncio.Future[None], offset: int, end: int) -> None:
        """A write of ``[offset, end)`` went out as ``write``."""
        if offset != self.sent:
            self.in_order = False
        self.sent = max(self.sent, end)
        self._issued.append((write, end))
        write.add_done_callback(self._landed)

    def _landed(self, _: asyncio.Future[None]) -> None:
        while self._issued and self._issued[0][0].done():
            write, end = self._issued[0]
            if write.cancelled() or write.exception() is not None:
                return  # the prefix stops here for good: the upload fails
            self._issued.popleft()
            self.acked = end
        self._wake()

    def finish(self, end: int) -> None:
        """Every write has settled and the file is closed: ``end`` is where it ends."""
        self.final = end
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    async def reached(self, end: int) -> int | None:
        """Wait until ``[0, end)`` is on the device, or the upload ended.

        Returns the upload's end once it is known (None before), so a read
        reaching it knows where the file must end.
        """
        while self.final is None and not (self.in_order and self.acked >= end):
            if self._changed is None:
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._changed)
        return self.final


async def read_back_sha256(read_back: Callable[[], AsyncIterator[bytes]]) -> str:
    """SHA-256 of the blocks ``read_back()`` yields, hashed on a worker thread.

    The thread holds only bytes it owns: a cancelled read-back closes nothing
    under it.
    """
    digest = ThreadHasher()
    async for chunk in read_back():
        digest.feed(chunk)
        await digest.room()
    return await digest.hexdigest()
