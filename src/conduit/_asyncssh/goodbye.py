"""Disconnect a client so that it hears why: what is queued and the reason first, then the close.

asyncssh's ``SSHConnection.disconnect()`` (2.24.1) says it closes the
connection "after buffered data waiting to be written has been sent", but it
aborts the transport. What is still queued goes: on a download, the replies
ahead of the ``MSG_DISCONNECT`` and the message itself. Closing a socket with
unread bytes from the peer (the client's window adjusts) also sends a TCP
reset, which can take what the kernel still held. A client whose access a
reload revoked then printed "Connection closed" instead of the reason.

:func:`disconnect` does what asyncssh's does (queues the message, lets
asyncssh clean the connection up at once: sessions end and are recorded as
before), then hands the socket to a drain instead of aborting it.
The drain writes what is queued and the message, shuts our side for writing
(FIN), reads and drops whatever the client still sends until it closes, and
closes the socket. A client that never reads is cut after :data:`GRACE`
seconds, as abrupt as before. Nothing more is sent or accepted: the SSH
connection is over the moment it is called, and the bytes it lets out were
queued (and recorded) before it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh
from asyncssh.constants import DEFAULT_LANG

_SSHConnection = asyncssh.connection.SSHConnection

GRACE = 5.0
"""Seconds a disconnected client gets to read what was queued before the socket is aborted."""

#: Private members of asyncssh's connection used here (pinned by tests/test_tuning.py).
USES: dict[str, Any] = {
    "SSHConnection.disconnect": _SSHConnection.disconnect,
    "SSHConnection._force_close": _SSHConnection._force_close,
    "SSHConnection._send_disconnect": _SSHConnection._send_disconnect,
    "SSHConnection._cleanup": _SSHConnection._cleanup,
}


class _Drain(asyncio.Protocol):
    """The socket after the SSH connection: its queue goes out, then it closes."""

    def __init__(self, transport: asyncio.Transport, grace: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(grace, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass  # the connection is over: nothing the client sends is read

    def eof_received(self) -> bool:
        return False  # the client closed too: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


def disconnect(conn: asyncssh.SSHServerConnection, code: int, reason: str) -> None:
    """Disconnect ``conn`` with ``code`` and ``reason``, the client reading both."""
    c: Any = conn
    transport = c._transport
    if transport is None:
        return  # already closing
    # No channel close first, unlike asyncssh: a client (scp) that saw its
    # channel close would leave, and take its ssh with it, before reading the
    # reason. The channels end locally in the clean-up.
    c._send_disconnect(code, reason, DEFAULT_LANG)
    # What _force_close does, but the socket drains instead of being aborted.
    c._transport = None
    transport.set_protocol(_Drain(transport, GRACE))
    try:
        if not transport.is_reading():
            transport.resume_reading()  # a paused socket would fill with the client's bytes
        transport.write_eof()  # FIN after the queued bytes and the message
    except (OSError, RuntimeError, NotImplementedError):
        transport.abort()  # the client is gone already (reset): nothing to drain
    c._loop.call_soon(c._cleanup, None)
