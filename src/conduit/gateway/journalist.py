"""The workers' records, as the supervisor journals them (``workers >= 2``).

A worker has no journal of its own: each record it makes arrives over its
channel (``{"op": "rec", ...}``) and is written here, into the node's one
chain and group commit, then answered once written per the fsync policy, so
durable-before-success holds as in one process. Two kinds are not answered
(remote.py decides which): a transfer's ``started`` sent ahead, which the
transfer's later records wait for here, and held outcomes and session
records, which the worker does not wait for.

Because a worker can die at any moment, the supervisor keeps, per worker,
what its records left open (a :class:`Ledger`), exactly as start-up
recovery would find it by scanning the journal. A death ends those sessions
and transfers ``failed`` (see :meth:`Journalist.losses`); intents stay open
for the storage to settle, as after a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from conduit.audit.journal import OPENING, TRANSFER_END, open_key
from conduit.audit.recovery import crash_items
from conduit.errors import AuditUnavailable
from conduit.gateway.handoff import Message

if TYPE_CHECKING:
    from conduit.gateway.app import Gateway
    from conduit.gateway.workers import Worker

log = logging.getLogger("conduit.gateway")

#: How often the journal's availability is checked for the workers' sake.
WATCH_EVERY = 0.25


class Ledger:
    """What one worker's records left open, and what it last heard."""

    __slots__ = ("ahead", "open", "sessions", "told")

    def __init__(self) -> None:
        # transfers and intents by key, sessions by id, as their opening records said
        self.open: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        # records sent ahead (remote.AHEAD), by transfer: written or refused
        self.ahead: dict[str, asyncio.Future[bool]] = {}
        self.told = True  # the journal's availability as this worker last heard it

    def track(self, type_: str, outcome: str, fields: dict[str, Any]) -> None:
        """Keep what is open after this record, as start-up recovery would."""
        if type_ in ("session.start", "session.end"):
            sid = str(fields.get("session"))
            if type_ == "session.start":
                self.sessions[sid] = {"type": type_, "outcome": outcome, **fields}
            else:
                self.sessions.pop(sid, None)
            return
        key = open_key(fields)
        if key is None:
            return
        if outcome in TRANSFER_END:
            self.open.pop(key, None)
        elif outcome in OPENING:
            self.open[key] = {"type": type_, "outcome": outcome, **fields}

    def take(self) -> list[tuple[str, str, dict[str, Any], Any]]:
        """The records that end what is open, forgetting all of it."""
        items = list(crash_items(dict(self.open), dict(self.sessions)))
        self.open.clear()
        self.sessions.clear()
        self.ahead.clear()
        return items


class Journalist:
    """Writes the workers' records and keeps every worker told whether the
    journal can be written (logins are refused while it cannot)."""

    def __init__(self, gateway: Gateway, pool: list[Worker]) -> None:
        self.gateway = gateway
        self.pool = pool

    def greet(self, worker: Worker) -> None:
        """A new worker hears the journal's state first."""
        worker.ledger.told = self.gateway.auditor_available()
        worker.channel_send({"op": "avail", "v": worker.ledger.told})

    def received(self, worker: Worker, message: Message) -> None:
        """A record from ``worker``: written in the background, answered once written."""
        ahead = None
        if message.get("ahead"):
            ahead = asyncio.get_running_loop().create_future()
            transfer = str((message.get("fields") or {}).get("transfer"))
            worker.ledger.ahead[transfer] = ahead
        self.gateway.spawn(self._record_for(worker, message, ahead))

    async def _record_for(
        self, worker: Worker, message: Message, ahead: asyncio.Future[bool] | None = None
    ) -> None:
        ledger = worker.ledger
        answer: Message = {"op": "re", "id": message.get("id")}
        type_, outcome = str(message.get("type")), str(message.get("outcome"))
        fields = dict(message.get("fields") or {})
        if type_ == "session.start":
            fields["worker"] = worker.index  # which process served the session
        try:
            before = ledger.ahead.get(str(fields.get("transfer"))) if ahead is None else None
            if before is not None:
                if outcome in TRANSFER_END:
                    ledger.ahead.pop(str(fields.get("transfer")), None)
                # the transfer's start was sent ahead: nothing of it is written
                # (its intent least of all) unless its start was
                if not await before:
                    raise AuditUnavailable("the transfer's started record was refused")
            seq = await self.gateway.recorder.record(
                type_,
                outcome,
                durable=bool(message.get("durable", True)),
                hold=bool(message.get("hold", False)),
                **fields,
            )
            answer["seq"] = seq if isinstance(seq, int) else 0
            ledger.track(type_, outcome, fields)
        except AuditUnavailable as exc:
            answer.update(err=str(exc), kind="unavailable")
        except Exception as exc:
            answer.update(err=str(exc), kind="error")
        if ahead is not None:
            ahead.set_result("err" not in answer)
        now = self.gateway.auditor_available()
        if message.get("id") is not None:  # held outcomes and starts ahead are not answered
            answer["avail"] = ledger.told = now
            worker.channel_send(answer)
        elif "err" in answer:
            log.error("worker %d: %s/%s not journalled: %s", worker.index, type_, outcome, answer)
        self.tell(now)  # the journal went down or came back with this record: all hear it

    async def losses(self, worker: Worker, why: str) -> None:
        """End what the dead worker left open, as start-up recovery would:
        its sessions and its transfers that never reached a commit intent
        ``failed``. Intents, and uploads whose temp file tells how much had
        arrived, stay open: they are settled against the storage (at this
        journal's close, or the next start), as after a crash."""
        for type_, outcome, fields, _ts in worker.ledger.take():
            what = "session" if type_ == "session.end" else "transfer"
            carried: dict[str, Any] = {**fields, "error": f"{why} during the {what}"}
            try:
                await self.gateway.recorder.record(type_, outcome, durable=False, **carried)
            except Exception as exc:
                log.error("could not record %s for a dead worker: %s", type_, exc)

    async def watch(self, stopping: Callable[[], bool]) -> None:
        """Tell the workers when the journal goes down or comes back, until ``stopping()``."""
        while not stopping():
            await asyncio.sleep(WATCH_EVERY)
            self.tell(self.gateway.auditor_available())

    def tell(self, now: bool) -> None:
        """Tell each worker that last heard otherwise whether the journal can
        be written (by an answer or from here: one node-wide "last told"
        missed a worker told by an answer, which then refused logins for good)."""
        for worker in self.pool:
            if worker.ledger.told != now and worker.channel_send({"op": "avail", "v": now}):
                worker.ledger.told = now
