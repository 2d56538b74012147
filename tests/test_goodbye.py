"""A disconnected client reads what was queued, then the reason (conduit._asyncssh.goodbye).

Real asyncssh server and client over loopback. The client stops reading while
the server queues channel data, so the server's transport holds a backlog
when it disconnects: asyncssh's own ``disconnect()`` aborts the socket and
drops the backlog and the message with it; :func:`goodbye.disconnect` must
deliver both, and still cut a client that never reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh
import pytest

from conduit._asyncssh import goodbye

CHUNK = 64 * 1024
QUEUED = 4 * 1024 * 1024


class _Server(asyncssh.SSHServer):
    def __init__(self, made: asyncio.Queue[asyncssh.SSHServerConnection]) -> None:
        self.made = made

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.made.put_nowait(conn)

    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: the test is about the socket


class _Client(asyncssh.SSHClient):
    def __init__(self) -> None:
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def _pair(
    bufsize: int = QUEUED * 2,
) -> tuple[asyncssh.SSHAcceptor, asyncssh.SSHClientConnection, _Client, Any, Any]:
    made: asyncio.Queue[asyncssh.SSHServerConnection] = asyncio.Queue()
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=lambda: _Server(made), server_host_keys=[key]
    )
    port = server.sockets[0].getsockname()[1]
    client_conn, client = await asyncssh.create_connection(
        _Client, "127.0.0.1", port, known_hosts=None, username="x"
    )
    conn = await made.get()
    return server, client_conn, client, conn, client_conn._transport


def _backlog(conn: Any) -> int:
    """Queue ignorable packets on the server until its transport holds a backlog
    (the client is not reading), as download replies would."""
    transport = conn._transport
    while transport.get_write_buffer_size() < QUEUED:
        conn.send_packet(asyncssh.constants.MSG_IGNORE, asyncssh.packet.String(b"x" * CHUNK))
    return int(transport.get_write_buffer_size())


async def test_the_client_reads_the_backlog_and_then_the_reason() -> None:
    server, client_conn, client, conn, client_transport = await _pair()
    try:
        client_transport.pause_reading()  # a slow client: the server's queue fills
        await asyncio.sleep(0.2)
        assert _backlog(conn) >= QUEUED
        # (a code other than "by application", which asyncssh's client reports as None)
        goodbye.disconnect(conn, asyncssh.DISC_SERVICE_NOT_AVAILABLE, "access revoked, say why")
        await asyncio.sleep(0.2)
        client_transport.resume_reading()
        exc = await asyncio.wait_for(client.lost, 10)
        assert isinstance(exc, asyncssh.DisconnectError), exc
        assert exc.reason == "access revoked, say why"
    finally:
        client_conn.abort()
        server.close()


async def test_a_client_that_never_reads_is_cut_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(goodbye, "GRACE", 0.5)
    server, client_conn, _, conn, client_transport = await _pair()
    try:
        client_transport.pause_reading()
        await asyncio.sleep(0.2)
        _backlog(conn)
        transport = conn._transport
        goodbye.disconnect(conn, asyncssh.DISC_BY_APPLICATION, "bye")
        assert conn._transport is None  # the SSH connection is over at once
        await asyncio.sleep(0.2)
        assert transport.get_extra_info("socket").fileno() >= 0  # still draining
        assert transport.get_write_buffer_size() > 0
        await asyncio.sleep(1.0)  # past the grace: aborted, nothing held any more
        assert transport.is_closing()
        assert transport.get_extra_info("socket").fileno() == -1
    finally:
        client_conn.abort()
        server.close()


async def test_a_client_already_gone_is_no_error() -> None:
    server, _, _, conn, client_transport = await _pair()
    try:
        client_transport.abort()  # reset: the server's socket is dead under it
        await asyncio.sleep(0.2)
        goodbye.disconnect(conn, asyncssh.DISC_BY_APPLICATION, "bye")
        goodbye.disconnect(conn, asyncssh.DISC_BY_APPLICATION, "twice")  # no-op
    finally:
        server.close()
