"""The supervisor-worker channel with real sockets: a client socket handed over
works, messages keep their order across batches, and a worker's record
succeeds only on the supervisor's answer; without a supervisor it fails closed."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

from conduit.errors import AuditUnavailable
from conduit.gateway.handoff import BATCH, Channel, Message, pair
from conduit.gateway.remote import Link, RemoteRecorder


class Inbox:
    """One end of a pair that keeps what it receives."""

    def __init__(self, sock: socket.socket) -> None:
        self.messages: list[tuple[Message, list[int]]] = []
        self.arrived = asyncio.Event()
        self.lost = False
        self.channel = Channel(sock, self._got, self._lost)

    def _got(self, message: Message, fds: list[int]) -> None:
        self.messages.append((message, fds))
        self.arrived.set()

    def _lost(self) -> None:
        self.lost = True

    async def wait(self, count: int) -> list[tuple[Message, list[int]]]:
        async with asyncio.timeout(10):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.messages


async def test_a_handed_socket_arrives_with_its_message() -> None:
    ours, theirs = pair()
    sender, receiver = Inbox(ours), Inbox(theirs)
    client, served = socket.socketpair()
    try:
        assert sender.channel.send({"op": "conn", "t": 7}, [served.fileno()])
        served.close()  # the sender's copy: the receiver's stays open
        [(message, fds)] = await receiver.wait(1)
        assert message == {"op": "conn", "t": 7} and len(fds) == 1
        with socket.socket(fileno=fds[0]) as handed:
            handed.sendall(b"SSH-2.0-x\r\n")
            assert client.recv(100) == b"SSH-2.0-x\r\n"
    finally:
        client.close()
        sender.channel.close()
        receiver.channel.close()


async def test_messages_keep_their_order_across_batches_and_descriptors() -> None:
    ours, theirs = pair()
    sender, receiver = Inbox(ours), Inbox(theirs)
    r, w = os.pipe()
    try:
        count = BATCH * 3 + 5
        for i in range(count):
            if i == BATCH + 1:
                sender.channel.send({"n": i}, [w])
            else:
                sender.channel.send({"n": i, "pad": "x" * 2000})
        got = await receiver.wait(count)
        assert [m["n"] for m, _ in got] == list(range(count))
        assert [n for n, (_, fds) in enumerate(got) if fds] == [BATCH + 1]
        for _, fds in got:
            for fd in fds:
                os.close(fd)
    finally:
        os.close(r)
        os.close(w)
        sender.channel.close()
        receiver.channel.close()


def _linked() -> tuple[Link, Inbox]:
    worker_end, supervisor_end = pair()
    link = Link(worker_end, lambda message, fds: None)
    return link, Inbox(supervisor_end)


async def test_a_record_is_done_only_when_the_supervisor_answers() -> None:
    link, supervisor = _linked()
    recorder = RemoteRecorder(link)
    try:
        pending = asyncio.ensure_future(
            recorder.record("file.upload", "intent", path="/inbox/a", bytes=3)
        )
        [(asked, _)] = await supervisor.wait(1)
        assert asked["op"] == "rec" and asked["durable"] is True
        assert asked["fields"] == {"path": "/inbox/a", "bytes": 3}
        await asyncio.sleep(0.05)
        assert not pending.done()  # no answer (no fsync) yet: no success
        supervisor.channel.send({"op": "re", "id": asked["id"], "seq": 42, "avail": True})
        assert await asyncio.wait_for(pending, 10) == 42
        # a refusal by the journal (closed mode) is the worker's refusal too
        refused = asyncio.ensure_future(recorder.record("file.upload", "started", path="/b"))
        [_, (asked, _)] = await supervisor.wait(2)
        supervisor.channel.send(
            {"op": "re", "id": asked["id"], "err": "disk full", "kind": "unavailable"}
        )
        with pytest.raises(AuditUnavailable, match="disk full"):
            await asyncio.wait_for(refused, 10)
    finally:
        link.channel.close()
        supervisor.channel.close()


@pytest.mark.parametrize("hold", [False, True])
async def test_without_its_supervisor_a_worker_fails_closed(hold: bool) -> None:
    link, supervisor = _linked()
    recorder = RemoteRecorder(link)
    kw: dict[str, Any] = {"durable": not hold, "hold": hold}
    waiting = asyncio.ensure_future(recorder.record("file.upload", "intent", path="/a", **kw))
    await supervisor.wait(1)
    supervisor.channel.close()  # the supervisor dies
    async with asyncio.timeout(10):
        await link.lost.wait()
    if not hold:  # a record waiting for its answer fails
        with pytest.raises(AuditUnavailable):
            await waiting
    else:
        assert await waiting == 0  # sent before the supervisor went
    assert not recorder.available  # logins are refused from now on
    with pytest.raises(AuditUnavailable):
        await recorder.record("file.upload", "started", path="/b", **kw)
