"""A worker process: the SSH connections its supervisor admitted and handed it.

``python -m conduit.gateway.worker --fd N --config PATH --index I`` (started
by :mod:`conduit.gateway.workers`, never by hand). The worker runs the same
:class:`~conduit.gateway.server.Connection` and session code as a
single-process gateway, on the sockets it receives over its channel; what
must stay one for the whole node stays with the supervisor, asked over the
channel:

- the audit journal: every record goes to the supervisor, which writes it
  into the one chain and answers once it is written per the fsync policy (a
  durable record after its group-commit fsync), so a client still hears
  success only after its record is on disk. No answer, no success: when the
  supervisor cannot be reached, records fail (:class:`AuditUnavailable`) and
  logins are refused, as when the journal itself fails. (The outcome of an
  effect whose durable intent is already written is sent in order without
  waiting: it is never refused, and recovery settles it if it is lost; an
  upload's ``started`` goes ahead of its commit intent, which is awaited and
  refused with it: see remote.py);
- admission (MaxStartups): the supervisor decided at accept time; the worker
  tells it when a connection authenticates or ends, and drops one it evicts;
- the defender's scoring and the failed-login summaries;
- the per-user session limit (a slot is claimed before a session opens).

The stand-ins for these live in :mod:`conduit.gateway.remote`.

The worker dies with its supervisor (``PR_SET_PDEATHSIG``, and its channel
reading EOF) and leaves nothing: an upload in flight stays a temp file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from conduit._asyncssh import tuning
from conduit.gateway.app import Gateway
from conduit.gateway.gate import Listener, Ticket
from conduit.gateway.handoff import Message
from conduit.gateway.hostkey import load_host_certificates, load_host_key
from conduit.gateway.reloading import one_line, revoke_sessions
from conduit.gateway.remote import (
    Link,
    RemoteAdmission,
    RemoteDefence,
    RemoteNoise,
    RemoteRecorder,
    RemoteSlots,
)
from conduit.gateway.resources import raise_nofile
from conduit.gateway.server import Connection
from conduit.site.build import build

log = logging.getLogger("conduit.gateway")

PR_SET_PDEATHSIG = 1


class _Acceptor:
    """The ``tunnel`` asyncssh listens through in a worker: no socket of its
    own; it keeps asyncssh's connection factory for the sockets handed over."""

    def __init__(self) -> None:
        self.factory: Callable[[str, int], Any] | None = None

    def __bool__(self) -> bool:
        return True

    async def create_server(
        self, session_factory: Callable[[str, int], Any], host: str, port: int
    ) -> _NoServer:
        self.factory = session_factory
        return _NoServer()


class _NoServer:
    """What asyncssh's acceptor wraps: nothing listens in a worker."""

    sockets: list[socket.socket] = []

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


class _Handed(asyncio.Protocol):
    """A handed-over socket until asyncssh takes it (at once)."""

    def __init__(self, worker: WorkerGateway, tid: int) -> None:
        self.worker = worker
        self.tid = tid

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.worker.serve(transport, self.tid)


class WorkerConnection(Connection):
    """A :class:`Connection` whose end the supervisor hears of (it counts the
    connections each worker holds, to hand the next to the least loaded)."""

    gateway: WorkerGateway
    tid = 0

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        ticket = self.gateway.gate.admitting
        self.tid = self.gateway.admission.id_of(ticket)
        super().connection_made(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.gateway.link.tell({"op": "closed", "t": self.tid})

    def record(self, type: str, outcome: str, **fields: Any) -> None:
        """As :meth:`Connection.record` (in the background, a refusal only
        logged), without a task and an answer per record: deferred to share
        a datagram with the next record that must go now."""
        identity: dict[str, Any] = {
            "principal": self.user if self.authenticated else None,
            "source": str(self.source),
            "zone": self.zone,
            "session": self.id,
        }
        try:
            self.gateway.remote.record_later(type, outcome, **identity, **fields)
        except ValueError as exc:  # as the task's exception would be in one process
            log.error("%s/%s not journalled: %s", type, outcome, exc)


class WorkerGateway(Gateway):
    """A :class:`Gateway` without a journal, listener or defender of its own."""

    def __init__(self, config: Any, link: Link, index: int) -> None:
        self.remote = RemoteRecorder(link)
        super().__init__(config, recorder=self.remote)
        self.link = link
        self.index = index
        self.admission = RemoteAdmission(link)
        self.counters.admission = self.admission  # type: ignore[assignment]
        self.counters.user_slots = RemoteSlots(link)
        self.noise = RemoteNoise(link)  # type: ignore[assignment]
        self.defence = RemoteDefence(link)  # type: ignore[assignment]
        self.gate = Listener(lambda ticket, peer: False, self.admission.leave)
        self._acceptor = _Acceptor()

    def auditor_available(self) -> bool:
        return self.link.up

    async def start(self) -> None:
        tuning.apply()
        raise_nofile()
        self.host_keys = load_host_key(self.config)
        self.host_certificates = load_host_certificates(self.config)
        self.areas = self._build_backends(self.config)
        self._server = await asyncssh.listen(
            "",
            0,
            tunnel=self._acceptor,
            server_factory=lambda: WorkerConnection(self),
            **self.server_options(),
        )

    async def take(self, fd: int, tid: int) -> None:
        """Serve the client socket ``fd`` the supervisor admitted as ``tid``."""
        sock = socket.socket(fileno=fd)
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: _Handed(self, tid), sock)
        except OSError:
            sock.close()
            self.link.tell({"op": "leave", "t": tid})
            self.link.tell({"op": "closed", "t": tid})

    def serve(self, transport: asyncio.Transport, tid: int) -> None:
        ticket = Ticket(transport)
        self.admission.add(tid, ticket)
        assert self._acceptor.factory is not None
        self.gate.hand_over(transport, self._acceptor.factory, ticket)
        if not ticket.claimed:  # asyncssh refused it before our Connection saw it
            self.link.tell({"op": "closed", "t": tid})

    def _sweep_later(self, before: dict[str, Any]) -> None:
        """The supervisor sweeps the areas (one sweep per node, not one per worker)."""

    async def reload_from_supervisor(self) -> dict[str, Any]:
        """The supervisor applied a new policy: take it, revoke what it ends."""
        try:
            await self.reload_off_loop()
        except Exception as exc:
            log.error("worker %d: policy reload failed: %s", self.index, one_line(exc))
            return {"ok": False, "error": one_line(exc)}
        return {"ok": True, "revoked": await revoke_sessions(self)}

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.conn is not None:
                connection.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "gateway stopping")
        # their session.end records reach the supervisor before this process ends
        deadline = asyncio.get_running_loop().time() + 2.0
        while (self._tasks or self.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for backend in list(self.areas.values()):
            with contextlib.suppress(Exception):
                await backend.close()


def _die_with_parent() -> None:
    """SIGKILL this process when the supervisor dies, however it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


async def run(fd: int, config_path: Path, index: int, parent: int) -> None:
    import os

    config = build(config_path).config
    stop = asyncio.Event()
    worker: WorkerGateway | None = None
    pending: list[tuple[int, int]] = []

    def on_message(message: Message, fds: list[int]) -> None:
        op = message.get("op")
        if op == "conn" and fds:
            for extra in fds[1:]:
                os.close(extra)
            if worker is None:
                pending.append((fds[0], int(message["t"])))
            else:
                worker.spawn(worker.take(fds[0], int(message["t"])))
            return
        for extra in fds:
            os.close(extra)
        if op == "drop" and worker is not None:
            worker.admission.drop(int(message["t"]))
        elif op == "avail":
            link.available = bool(message.get("v"))
        elif op == "reload" and worker is not None:
            rid = message.get("rid")

            async def reload() -> None:
                assert worker is not None
                link.tell({"op": "reloaded", "rid": rid, **await worker.reload_from_supervisor()})

            worker.spawn(reload())
        elif op == "stop":
            stop.set()

    link = Link(socket.socket(fileno=fd), on_message)
    if os.getppid() != parent:  # the supervisor died before PDEATHSIG was set
        return
    starting = WorkerGateway(config, link, index)
    await starting.start()
    worker = starting  # from now on, handed sockets are served at once
    for handed, tid in pending:
        worker.spawn(worker.take(handed, tid))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # A terminal's Ctrl-C or hangup reaches the whole process group: the
    # supervisor stops or reloads us over the channel, in order.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    lost = asyncio.ensure_future(link.lost.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([lost, stopped], return_when=asyncio.FIRST_COMPLETED)
    lost.cancel()
    stopped.cancel()
    await worker.stop()
    link.channel.flush()  # deferred messages (held outcomes) go before the process ends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conduit-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _die_with_parent()
    for sig in (signal.SIGINT, signal.SIGHUP):  # until the loop takes them over
        signal.signal(sig, signal.SIG_IGN)
    from conduit.gateway.process import tune_malloc

    tune_malloc()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format=f"%(asctime)s worker{args.index} %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(run(args.fd, args.config, args.index, args.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
