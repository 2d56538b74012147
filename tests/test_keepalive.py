"""conduit._asyncssh.keepalive (tuning 13): the keepalive deadline moves, the timer stays.

On a real asyncssh connection over loopback: data received keeps the armed
timer and moves the deadline (asyncssh cancelled and re-armed a timer per
read: the first test fails on it); a timer firing before the deadline is
armed again for exactly the deadline; past it asyncssh's own check runs (a
keepalive the client answers; a client that stopped reading is dropped with
asyncssh's reason); ``set_keepalive`` to a shorter interval or to none takes
effect at once. No test depends on how long anything takes: waits are bounded
only to fail instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncssh
import pytest

from conduit._asyncssh import keepalive, tuning


def _echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    async def run() -> None:
        with contextlib.suppress(BrokenPipeError, asyncssh.Error):  # the client left
            async for line in process.stdin:
                process.stdout.write(line)
            process.exit(0)

    asyncio.get_running_loop().create_task(run())


class _Pair:
    def __init__(self, server: Any, client: asyncssh.SSHClientConnection) -> None:
        self.server = server  # asyncssh.SSHServerConnection
        self.client = client

    async def echo(self, process: Any, text: bytes) -> None:
        process.stdin.write(text)
        assert await asyncio.wait_for(process.stdout.readline(), 30) == text


@pytest.fixture
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[_Pair]:
    tuning.apply()
    options: dict[str, Any] = getattr(request, "param", {"keepalive_interval": 3600})
    made: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: Any) -> None:
            if not made.done():
                made.set_result(conn)

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    listener = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=Server,
        server_host_keys=[host_key],
        process_factory=_echo,
        authorized_client_keys=asyncssh.import_authorized_keys(
            client_key.export_public_key().decode()
        ),
        encoding=None,
        **options,
    )
    port = listener.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, client_keys=[client_key], username="u"
        ) as client:
            yield _Pair(await asyncio.wait_for(made, 30), client)
    finally:
        listener.close()
        await listener.wait_closed()


async def test_data_moves_the_deadline_not_the_timer(pair: _Pair) -> None:
    process = await pair.client.create_process(encoding=None)
    await pair.echo(process, b"first\n")  # arms the lazy timer (asyncssh armed one at auth)
    timer = pair.server._keepalive_timer
    assert timer is not None and not timer.cancelled()
    due = pair.server._keepalive_due
    for n in range(5):
        await pair.echo(process, b"more %d\n" % n)
    assert pair.server._keepalive_timer is timer  # asyncssh: a new handle per read
    assert not timer.cancelled()
    assert timer.when() <= due  # armed once, for an earlier deadline
    assert pair.server._keepalive_due > due  # the deadline followed the data
    process.close()


async def test_early_timer_armed_again_for_the_deadline(pair: _Pair) -> None:
    process = await pair.client.create_process(encoding=None)
    await pair.echo(process, b"first\n")
    await pair.echo(process, b"second\n")
    server = pair.server
    timer = server._keepalive_timer
    ran: list[bool] = []
    server._keepalive_timer_callback = lambda: ran.append(True)
    timer.cancel()  # it fires now, before the deadline, as the loop would run it
    keepalive._due(server)
    assert not ran  # data came since it was armed: no keepalive yet
    again = server._keepalive_timer
    assert again is not timer and again.when() == server._keepalive_due
    server._keepalive_due = server._loop.time() - 1  # the deadline has passed
    again.cancel()
    keepalive._due(server)
    assert ran == [True]  # asyncssh's own check runs
    process.close()


@pytest.mark.parametrize("pair", [{"keepalive_interval": 0.2}], indirect=True)
async def test_idle_client_gets_keepalives_and_answers(pair: _Pair) -> None:
    process = await pair.client.create_process(encoding=None)
    await pair.echo(process, b"data\n")  # the lazy timer armed by a read
    server = pair.server
    fired = asyncio.Event()
    original = server._keepalive_timer_callback

    def callback() -> None:
        fired.set()
        original()

    server._keepalive_timer_callback = callback
    for _ in range(2):
        fired.clear()
        await asyncio.wait_for(fired.wait(), 30)
    await pair.echo(process, b"still here\n")  # the connection lived on: answers counted
    assert not server._transport.is_closing()
    process.close()


@pytest.mark.parametrize(
    "pair", [{"keepalive_interval": 0.2, "keepalive_count_max": 1}], indirect=True
)
async def test_client_gone_silent_is_dropped(pair: _Pair) -> None:
    process = await pair.client.create_process(encoding=None)
    await pair.echo(process, b"data\n")
    lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
    server = pair.server
    original = server._owner.connection_lost

    def connection_lost(exc: Exception | None) -> None:
        if not lost.done():
            lost.set_result(exc)
        original(exc)

    server._owner.connection_lost = connection_lost
    pair.client._transport.pause_reading()  # no answer to the keepalives any more
    exc = await asyncio.wait_for(lost, 30)
    assert isinstance(exc, asyncssh.ConnectionLost)
    assert "not responding to keepalive" in str(exc)


async def test_set_keepalive_takes_effect_at_once(pair: _Pair) -> None:
    process = await pair.client.create_process(encoding=None)
    await pair.echo(process, b"first\n")
    server = pair.server
    lazy = server._keepalive_timer
    server.set_keepalive(0.5)
    shorter = server._keepalive_timer
    assert lazy.cancelled() and shorter is not lazy
    assert shorter.when() <= server._loop.time() + 0.5
    server.set_keepalive(0)
    assert shorter.cancelled() and server._keepalive_timer is None
    await pair.echo(process, b"no keepalive\n")
    assert server._keepalive_timer is None  # data arms nothing with keepalives off
    process.close()


def test_revert_restores_asyncssh_reset() -> None:
    owner = asyncssh.connection.SSHConnection
    tuning.revert()
    try:
        assert (
            owner.__dict__["_reset_keepalive_timer"]
            is keepalive.ORIGINALS["SSHConnection._reset_keepalive_timer"]
        )
    finally:
        tuning.apply()
    assert owner.__dict__["_reset_keepalive_timer"] is keepalive._reset_keepalive_timer
