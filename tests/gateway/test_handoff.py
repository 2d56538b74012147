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


async def _datagram(sock: socket.socket) -> list[Message]:
    """The next datagram on a raw end, decoded."""
    import json

    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    async with asyncio.timeout(10):
        data = await loop.sock_recv(sock, 1 << 16)
    messages: list[Message] = json.loads(data)
    return messages


async def test_a_deferred_message_rides_with_the_next_one_or_goes_alone() -> None:
    ours, raw = pair()
    channel = Channel(ours, lambda message, fds: None, lambda: None)
    try:
        channel.send({"n": 1}, defer=True)
        await asyncio.sleep(0)  # a loop iteration later it has not gone yet
        channel.send({"n": 2})
        assert await _datagram(raw) == [{"n": 1}, {"n": 2}]  # one datagram, in order
        channel.send({"n": 3}, defer=True)  # nobody follows: it goes by itself
        assert await _datagram(raw) == [{"n": 3}]
    finally:
        channel.close()
        raw.close()


async def test_an_upload_start_goes_ahead_with_its_intent() -> None:
    worker_end, raw = pair()
    link = Link(worker_end, lambda message, fds: None)
    recorder = RemoteRecorder(link)
    try:
        # not awaited for an answer: done at once, and sent with the intent
        assert await recorder.record("file.upload", "started", transfer="t1", path="/a") == 0
        intent = asyncio.ensure_future(
            recorder.record("file.upload", "intent", transfer="t1", path="/a", bytes=1)
        )
        started, asked = await _datagram(raw)
        assert started["outcome"] == "started" and started["ahead"] is True
        assert "id" not in started and asked["outcome"] == "intent" and asked["id"]
        # the supervisor refused the start: it refuses the intent, no effect
        await asyncio.sleep(0.05)
        assert not intent.done()  # the intent waits for its answer
        raw.send(b'[{"op":"re","id":%d,"err":"refused","kind":"unavailable"}]' % asked["id"])
        with pytest.raises(AuditUnavailable, match="refused"):
            await asyncio.wait_for(intent, 10)
        # the journal is known to be down: the start waits for its answer
        link.available = False
        waiting = asyncio.ensure_future(
            recorder.record("file.upload", "started", transfer="t2", path="/b")
        )
        [asked] = await _datagram(raw)
        assert asked["outcome"] == "started" and asked["id"] and "ahead" not in asked
        assert not waiting.done()
        waiting.cancel()
    finally:
        link.channel.close()
        raw.close()


async def test_a_background_record_is_deferred_and_unanswered() -> None:
    worker_end, raw = pair()
    link = Link(worker_end, lambda message, fds: None)
    recorder = RemoteRecorder(link)
    try:
        recorder.record_later("session.end", "success", session="s1", bytes_in=1)
        with pytest.raises(ValueError):  # refused here, as in one process
            recorder.record_later("session.end", "no-such-outcome", session="s1")
        asking = asyncio.ensure_future(recorder.record("file.upload", "intent", path="/a"))
        ended, asked = await _datagram(raw)  # one datagram, in order
        assert ended["type"] == "session.end" and "id" not in ended
        assert asked["outcome"] == "intent" and asked["id"]
        asking.cancel()
        link.channel.close()
        recorder.record_later("session.end", "success", session="s2")  # logged, not raised
    finally:
        link.channel.close()
        raw.close()
