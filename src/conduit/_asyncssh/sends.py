"""Channel data sent in one socket write per flush, not one per SSH packet (tuning item 9).

asyncssh hands every packet it seals to ``transport.write`` at once
(``SSHConnection._send``), and asyncio's socket transport makes a ``send()``
system call for each while its buffer is empty. A 255 KiB SFTP read reply to
OpenSSH's client is eight SSH packets (it advertises a 32768-byte maximum
packet), and so is a window's worth of ``scp`` download: eight system calls
where one would do. Profiles put ``transport.write`` at 8-10 % of the event
loop on a big download.

Where packets come in bursts, asyncssh sends them from one place:
``SSHChannel._flush_send_buf`` cuts what the application wrote into packets up
to the peer's window (and adds EOF or CLOSE when due). Its copy in
:mod:`.tuning` calls :func:`gather` before and :func:`release` after; in
between ``_send`` queues the sealed packets, and :func:`release` hands them to
the transport as one ``write`` (``b"".join``: Python 3.11's socket transport
has no ``writelines`` of its own, its default joins the same way). Everywhere
else ``_send`` writes at once, as asyncssh does.

Measured first, and rejected: queueing every packet and flushing once per
loop turn (``loop.call_soon``), as first planned. Counting packets per turn
on the gateway showed tree transfers (SFTP, SCP, both ways) at one packet per
turn in 99 % of turns: nothing to gather, and the flush's extra loop turn (an
``epoll_wait`` and a callback) made every tree row slower (server CPU +4 to
+30 %, docs/asyncssh.md). The bursts are all in ``_flush_send_buf``.

What makes it safe:

- order: packets are sealed (sequence numbers, keys) exactly as before, and
  the queue only appends and is written whole before ``_flush_send_buf``
  returns, so the bytes on the wire are the same bytes in the same order,
  across a key exchange too (a KEXINIT asyncssh starts in the middle is
  queued in its place);
- bounded: once :data:`LIMIT` bytes are queued they are written at once, so
  a 2 MiB window is not held twice in memory;
- latency: nothing waits for a later turn, a timer or more data: the write
  happens before ``_flush_send_buf`` returns;
- closing: every path asyncssh takes to drop its transport goes through
  ``SSHConnection._force_close`` (``disconnect``, ``abort``, ``connection_lost``,
  ``internal_error``, version errors, the login timeout), which sets
  ``_transport`` to None and schedules ``transport.abort()``. It is wrapped to
  write the queue first, so a DISCONNECT sent while a caller gathers still
  reaches the transport; bytes asyncssh sends after that are dropped, as
  before;
- flow control: asyncssh's connection ignores ``pause_writing`` (what bounds a
  slow reader is the peer's channel window), and the queue is written to the
  same transport, so a stalled reader sees what it saw before.

The change is made on the class, so it applies to every asyncssh connection in
the process (the gateway's server side and its relay client alike).
"""

from __future__ import annotations

from typing import Any

from asyncssh import connection as _connection

_SSHConnection = _connection.SSHConnection

#: Queued bytes that are written at once, before the gatherer releases them.
LIMIT = 256 * 1024

ORIGINALS: dict[str, Any] = {
    "SSHConnection._send": _SSHConnection._send,
    "SSHConnection._force_close": _SSHConnection._force_close,
}

#: Not replaced, but relied on: ``connection_made`` sets ``_transport``, and
#: these are the callers that hand ``_send`` its bytes (their copies in
#: :mod:`.tuning` and :mod:`.gcm` included).
USES: dict[str, Any] = {
    "SSHConnection.connection_made": _SSHConnection.connection_made,
    "SSHConnection._send_version": _SSHConnection._send_version,
    "SSHConnection.disconnect": _SSHConnection.disconnect,
}

_orig_force_close = _SSHConnection._force_close


def gather(conn: Any) -> bool:
    """Start queueing ``conn``'s packets; False if a caller further out already does."""
    if conn.__dict__.get("_conduit_sendq") is not None:
        return False
    conn._conduit_sendq = []
    conn._conduit_sendn = 0
    return True


def release(conn: Any) -> None:
    """Hand what was queued on ``conn`` to its transport in one write; stop queueing."""
    queue: list[bytes] | None = conn.__dict__.get("_conduit_sendq")
    conn._conduit_sendq = None
    if queue:
        _write(conn, queue)


def _write(conn: Any, queue: list[bytes]) -> None:
    transport = conn._transport
    if transport:
        try:  # noqa: SIM105 - per packet: cheaper than contextlib.suppress
            transport.write(queue[0] if len(queue) == 1 else b"".join(queue))
        except ConnectionError:  # pragma: no cover - as asyncssh's _send
            pass


def _send(self: Any, data: bytes) -> None:
    """SSHConnection._send, queued while a caller gathers (see :func:`gather`)."""
    if not self._transport:
        return
    queue: list[bytes] | None = self.__dict__.get("_conduit_sendq")
    if queue is None:
        try:  # noqa: SIM105 - per packet: cheaper than contextlib.suppress
            self._transport.write(data)
        except ConnectionError:  # pragma: no cover - as asyncssh's _send
            pass
        return
    queue.append(data)
    self._conduit_sendn += len(data)
    if self._conduit_sendn >= LIMIT:
        _write(self, queue)
        self._conduit_sendq = []
        self._conduit_sendn = 0


def _force_close(self: Any, exc: Exception | None) -> None:
    """SSHConnection._force_close, after writing what is queued."""
    release(self)
    _orig_force_close(self, exc)


PATCHES: dict[str, tuple[Any, str, Any]] = {
    "SSHConnection._send": (_SSHConnection, "_send", _send),
    "SSHConnection._force_close": (_SSHConnection, "_force_close", _force_close),
}
