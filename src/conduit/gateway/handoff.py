"""The wire between the supervisor and its worker processes.

One ``SOCK_SEQPACKET`` Unix socket pair per worker: every message is one
datagram holding one JSON object, and an accepted client socket rides along
with the message that hands it over (``SCM_RIGHTS``, :func:`socket.send_fds`).
Seqpacket keeps message boundaries and order, and a closed end reads as EOF,
so the other side learns at once that its peer is gone (a worker then stops;
the supervisor journals the worker's death and starts another).

asyncio's transports cannot carry descriptors, so this reads with
``add_reader`` and ``recv_fds`` and writes with non-blocking ``send_fds``,
queueing what the kernel buffer cannot take yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

#: The largest datagram (an audit record with long paths and reasons is a few
#: KiB); batches are cut at CHUNK.
MAX_MESSAGE = 256 << 10
CHUNK = 64 << 10
#: Socket buffer of each end: room for a burst of records and handed sockets.
BUFFER = 4 << 20
#: Messages sent in one loop iteration share a datagram, up to this many.
BATCH = 64
#: How long a deferred message (one nobody waits for) may wait for company.
LINGER = 0.02

log = logging.getLogger("conduit.gateway")

Message = dict[str, Any]
#: (message, descriptors that came with it) -> None
Handler = Callable[[Message, list[int]], None]


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of ends: (supervisor's, worker's)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (ours, theirs):
        with contextlib.suppress(OSError):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    return ours, theirs


class Channel:
    """One end of a pair, on the running event loop."""

    def __init__(self, sock: socket.socket, handler: Handler, lost: Callable[[], None]) -> None:
        self.sock = sock
        sock.setblocking(False)
        self._handler = handler
        self._lost = lost
        self._queue: deque[tuple[bytes, list[int]]] = deque()
        self._writing = False
        self._batch: list[Message] = []
        self._soon = False  # a flush is due at the end of this loop iteration
        self._later: asyncio.TimerHandle | None = None  # ... or after LINGER
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def send(
        self, message: Message, fds: list[int] | tuple[int, ...] = (), *, defer: bool = False
    ) -> bool:
        """Send ``message`` (and dups of ``fds``: the caller keeps and closes its
        own) at the end of this loop iteration. False if the peer is gone:
        nothing will be sent.

        Messages sent in one loop iteration go out as one datagram (a JSON
        list): under load a worker's records and the supervisor's answers
        then cost one system call and one wakeup per batch, not per message.

        ``defer``: nobody waits for this message (a held outcome), so it waits
        for the next message that must go now, or LINGER at most, and shares
        its datagram. Each datagram wakes the peer (and on a busy machine the
        wakeup preempts the sender); an upload's outcome then rides with the
        next file's ``started``, one wakeup fewer per file. Order is kept.
        """
        if self.closed:
            return False
        if fds:  # descriptors ride alone, after what is already batched
            self.flush()
            return self._send_now([message], fds)
        self._batch.append(message)
        if len(self._batch) >= BATCH:
            self.flush()
        elif not defer:
            if not self._soon:
                self._soon = True
                self._loop.call_soon(self.flush)
        elif not self._soon and self._later is None:
            self._later = self._loop.call_later(LINGER, self.flush)
        return True

    def flush(self) -> None:
        """What was sent and not yet flushed, now, in datagrams of up to CHUNK bytes."""
        self._soon = False
        if self._later is not None:
            self._later.cancel()
            self._later = None
        batch, self._batch = self._batch, []
        chunk: list[str] = []
        size = 0
        for message in batch:
            part = json.dumps(message, separators=(",", ":"))  # ASCII: len is bytes
            if chunk and size + len(part) > CHUNK:
                self._send_data(f"[{','.join(chunk)}]".encode(), ())
                chunk, size = [], 0
            chunk.append(part)
            size += len(part) + 1
        if chunk:
            self._send_data(f"[{','.join(chunk)}]".encode(), ())

    def _send_now(self, messages: list[Message], fds: list[int] | tuple[int, ...]) -> bool:
        return self._send_data(json.dumps(messages, separators=(",", ":")).encode(), fds)

    def _send_data(self, data: bytes, fds: list[int] | tuple[int, ...]) -> bool:
        if self.closed:
            return False
        if len(data) > MAX_MESSAGE:  # no record comes near; never from a client alone
            log.error(
                "message of %d bytes not sent: over %d; channel closed", len(data), MAX_MESSAGE
            )
            self.close()  # its peer fails closed rather than wait for an answer
            return False
        if self._queue:
            self._queue.append((data, [os.dup(fd) for fd in fds]))
            return True
        try:
            socket.send_fds(self.sock, [data], list(fds)) if fds else self.sock.send(data)
        except BlockingIOError:
            self._queue.append((data, [os.dup(fd) for fd in fds]))
            self._want_write()
        except OSError:
            self.close()
            return False
        return True

    def _want_write(self) -> None:
        if not self._writing and not self.closed:
            self._writing = True
            self._loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        while self._queue:
            data, fds = self._queue[0]
            try:
                socket.send_fds(self.sock, [data], fds) if fds else self.sock.send(data)
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            self._queue.popleft()
            for fd in fds:
                os.close(fd)
        self._writing = False
        self._loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        for _ in range(256):  # then let the loop serve others
            try:
                data, fds, flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if not data:
                for fd in fds:
                    os.close(fd)
                self.close()
                return
            try:
                messages = json.loads(data)
            except ValueError:
                messages = None
            if not isinstance(messages, list) or flags & socket.MSG_TRUNC:
                for fd in fds:
                    os.close(fd)
                continue  # never from our own peer; nothing to act on
            for message in messages:
                if isinstance(message, dict):
                    self._handler(message, fds)
                    fds = []
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._later is not None:
            self._later.cancel()
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
            if self._writing:
                self._loop.remove_writer(self.sock.fileno())
        for _data, fds in self._queue:
            for fd in fds:
                os.close(fd)
        self._queue.clear()
        self.sock.close()
        self._lost()
