"""A worker process's side of what stays with its supervisor (see worker.py).

The journal, admission, the per-user session count, the defender's scores and
the failed-login summaries are one per node; a worker reaches them over its
channel (handoff.py) through these stand-ins, which the shared connection code
uses as it uses the real ones in a single process.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from conduit.audit.events import check_event
from conduit.errors import AuditUnavailable
from conduit.gateway.defending import offence
from conduit.gateway.gate import Ticket
from conduit.gateway.handoff import Channel, Message

log = logging.getLogger("conduit.gateway")

#: The record a worker sends ahead without waiting for its answer (see
#: RemoteRecorder.record): what it starts cannot take effect before a later
#: record of the same transfer, which is awaited and waits for this one.
AHEAD = ("file.upload", "started")

#: What records and logins meet once the supervisor is gone.
SUPERVISOR_GONE = "the gateway's supervisor (the journal writer) cannot be reached"


class Link:
    """The worker's end of its channel: calls answered by id, and notices."""

    def __init__(self, sock: socket.socket, on_message: Callable[[Message, list[int]], None]):
        self._calls: dict[int, asyncio.Future[Message]] = {}
        self._next = 0
        self._on_message = on_message
        self.available = True  # the supervisor's journal, as it last said
        self.lost = asyncio.Event()
        self.channel = Channel(sock, self._received, self._gone)

    @property
    def up(self) -> bool:
        return not self.channel.closed and self.available

    def tell(self, message: Message) -> None:
        self.channel.send(message)

    async def call(self, message: Message) -> Message:
        self._next += 1
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._calls[self._next] = future
        if not self.channel.send({**message, "id": self._next}):
            self._calls.pop(self._next, None)
            raise AuditUnavailable(SUPERVISOR_GONE)
        return await future

    def _received(self, message: Message, fds: list[int]) -> None:
        if message.get("op") == "re":
            future = self._calls.pop(int(message.get("id", 0)), None)
            if future is not None and not future.done():
                future.set_result(message)
            if "avail" in message:
                self.available = bool(message["avail"])
            return
        self._on_message(message, fds)

    def _gone(self) -> None:
        for future in self._calls.values():
            if not future.done():
                future.set_exception(AuditUnavailable(SUPERVISOR_GONE))
        self._calls.clear()
        self.lost.set()


class RemoteRecorder:
    """Records into the supervisor's journal; returns once it is written there."""

    def __init__(self, link: Link) -> None:
        self.link = link

    @property
    def available(self) -> bool:
        return self.link.up

    def record_later(self, type: str, outcome: str, **fields: Any) -> None:
        """A record made in the background that nobody waits for (a
        connection's ``session.start``/``session.end``: in one process a
        spawned task whose refusal is only logged): deferred, unanswered; the
        supervisor logs a refusal. Order with the other records is kept."""
        present = {k: v for k, v in fields.items() if v is not None}
        cleaned = check_event(str(type), str(outcome), present)
        message = {"op": "rec", "type": str(type), "outcome": str(outcome), "fields": cleaned}
        if not self.link.channel.send(message, defer=True):
            log.error("%s/%s not journalled: %s", type, outcome, SUPERVISOR_GONE)

    async def record(
        self, type: str, outcome: str, *, durable: bool = True, hold: bool = False, **fields: Any
    ) -> int:
        present = {k: v for k, v in fields.items() if v is not None}
        cleaned = check_event(str(type), str(outcome), present)  # ValueError here, as in-process
        message = {
            "op": "rec",
            "type": str(type),
            "outcome": str(outcome),
            "durable": durable,
            "hold": hold,
            "fields": cleaned,
        }
        if hold:
            # The outcome of an effect whose durable intent is written: never
            # refused, and if it is lost with the supervisor, start-up recovery
            # settles the intent (writeahead.py). Sent in order, not awaited,
            # and deferred: it shares the datagram of the next record.
            if not self.link.channel.send(message, defer=True):
                raise AuditUnavailable(SUPERVISOR_GONE)
            return 0
        ahead = (message["type"], message["outcome"]) == AHEAD and "transfer" in cleaned
        if ahead and self.link.up:
            # An upload's start: its effect waits for its commit intent, which
            # is awaited, and which the supervisor refuses if this was refused
            # (the two ride one datagram as a rule: one wakeup, not two, per
            # file). Known journal trouble refuses it here and now, below.
            if not self.link.channel.send({**message, "ahead": True}, defer=True):
                raise AuditUnavailable(SUPERVISOR_GONE)
            return 0
        answer = await self.link.call(message)
        if "err" in answer:
            if answer.get("kind") == "unavailable":
                raise AuditUnavailable(str(answer["err"]))
            raise ValueError(str(answer["err"]))
        return int(answer.get("seq", 0))


class RemoteAdmission:
    """The worker's view of admission: tells the supervisor, which counts."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.tickets: dict[int, Ticket] = {}
        self._ids: dict[Ticket, int] = {}

    def __len__(self) -> int:
        return len(self.tickets)

    def add(self, tid: int, ticket: Ticket) -> None:
        self.tickets[tid] = ticket
        self._ids[ticket] = tid

    def id_of(self, ticket: Ticket | None) -> int:
        return self._ids.get(ticket, 0) if ticket is not None else 0

    def protect(self, ticket: Ticket) -> None:
        tid = self._ids.get(ticket)
        if tid is not None:
            self.link.tell({"op": "protect", "t": tid})

    def leave(self, ticket: Ticket) -> None:
        tid = self._ids.pop(ticket, None)
        if tid is not None:
            self.tickets.pop(tid, None)
            self.link.tell({"op": "leave", "t": tid})

    def drop(self, tid: int) -> None:
        """The supervisor evicted it (to make room): close it."""
        ticket = self.tickets.pop(tid, None)
        if ticket is not None:
            self._ids.pop(ticket, None)
            ticket.drop()


class RemoteNoise:
    """Failed logins and refused connections, summarised by the supervisor."""

    interval = 0.0  # set by a reload; the supervisor's own summaries use its own
    min_free = 0

    def __init__(self, link: Link) -> None:
        self.link = link

    def refused(self, source: str, reason: str) -> None:
        self.link.tell({"op": "noise", "m": "refused", "a": [source, reason], "k": {}})

    def auth_failure(
        self, source: str, user_given: str, auth_method: str, reason: str, **fields: Any
    ) -> None:
        args = [source, user_given, auth_method, reason]
        present = {k: v for k, v in fields.items() if v is not None}
        self.link.tell({"op": "noise", "m": "auth_failure", "a": args, "k": present})


class RemoteDefence:
    """The defender's scoring, done by the supervisor for every worker."""

    stopping = False

    def __init__(self, link: Link) -> None:
        self.link = link

    def ended(
        self, address: IPv4Address | IPv6Address, failures: int, exc: Exception | None
    ) -> None:
        what = offence(failures, exc)
        self.link.tell({"op": "offence", "source": str(address), "what": what.value})


class RemoteSlots:
    """Per-user session slots, counted by the supervisor across workers."""

    def __init__(self, link: Link) -> None:
        self.link = link

    async def claim(self, user: str, limit: int) -> bool:
        try:
            answer = await self.link.call({"op": "claim", "user": user, "limit": limit})
        except AuditUnavailable:
            return False
        return bool(answer.get("ok"))

    def release(self, user: str) -> None:
        self.link.tell({"op": "release", "user": user})
