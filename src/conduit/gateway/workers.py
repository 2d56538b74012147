"""The supervisor of worker processes (``[gateway] workers >= 2``).

One Python process runs on one core; ``sshd`` gives every connection its
own. With workers, the ``serve`` process (the *supervisor*) keeps what must
be one per node and hands the rest out:

- it owns the listening socket, accepts, and admits exactly as a
  single-process gateway does (defender bans, descriptor reserve,
  MaxStartups per source and in total: global by construction, since one
  process decides them all), then hands each admitted socket to the worker
  holding the fewest connections (``SCM_RIGHTS`` over the worker's channel,
  see handoff.py);
- it owns the audit journal: a worker's records arrive over its channel and
  are answered once written per the fsync policy (after the group-commit
  fsync for a durable record), so durable-before-success holds unchanged;
  records from every worker share one chain and one group commit (see
  journalist.py);
- it keeps the per-user session count, the defender's scores and the
  failed-login summaries for all workers;
- a reload (SIGHUP, ``conduit reload``) is applied here, then by every
  worker, which revokes its own sessions the new policy no longer allows;
  the answer comes once every worker has answered;
- a worker that dies is journalled (``gateway.worker`` ``failed``) and
  replaced; only its own connections are lost (see _worker_gone).

Workers are interpreters started with ``subprocess``, not ``fork`` (this
process has a running loop and journal threads a child must not inherit);
see docs/architecture.md "Worker processes" for the design and its costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import conduit
from conduit.auth.defender import Offence
from conduit.config import Config
from conduit.errors import ListenError
from conduit.gateway.app import Gateway
from conduit.gateway.gate import BACKLOG
from conduit.gateway.handoff import Channel, Message, pair
from conduit.gateway.journalist import Journalist, Ledger
from conduit.gateway.reloading import ReloadResult
from conduit.storage import localfiles

log = logging.getLogger("conduit.gateway")

#: The event type of a worker's death.
WORKER_EVENT = "gateway.worker"
#: How long a reload waits for the workers' answers.
RELOAD_WAIT = 10.0
#: How long a stop waits for workers to end their connections.
STOP_WAIT = 5.0


class HandedTicket:
    """A connection handed to a worker, as admission counts it (a ``Waiting``)."""

    __slots__ = ("dropped", "tid", "worker")

    def __init__(self, tid: int, worker: Worker) -> None:
        self.tid = tid
        self.worker = worker
        self.dropped = False

    def drop(self) -> None:
        """Evicted to make room: the worker closes it."""
        self.dropped = True
        self.worker.channel_send({"op": "drop", "t": self.tid})


class Worker:
    """One worker process and what the supervisor counts for it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.held: set[int] = set()  # handed connections not yet closed
        self.slots: Counter[str] = Counter()  # per-user sessions it holds
        self.ledger = Ledger()  # what its records left open (its death ends them)
        self.started = 0.0
        self.failures = 0  # deaths soon after start, in a row (backoff)

    @property
    def alive(self) -> bool:
        return self.channel is not None and not self.channel.closed

    def channel_send(self, message: Message, fds: list[int] | None = None) -> bool:
        return self.channel is not None and self.channel.send(message, fds or ())


class Supervisor(Gateway):
    """A :class:`Gateway` that serves its connections in worker processes."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        if config.source is None:
            raise ListenError("gateway.workers needs a policy file (workers re-read it)")
        super().__init__(config, **kwargs)
        self.pool = [Worker(i) for i in range(config.gateway.worker_count)]
        self._tickets: dict[int, HandedTicket] = {}
        self._next_tid = 0
        self._sock: socket.socket | None = None
        self.user_sessions: Counter[str] = Counter()
        self._reloads: dict[int, dict[int, Message]] = {}
        self._reload_done: dict[int, asyncio.Event] = {}
        self.journalist = Journalist(self, self.pool)

    # -- listening and handing over ----------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    async def _listen(self) -> None:
        gw = self.config.gateway
        self.areas = self._build_backends(self.config)
        self.devices = self._build_devices(self.config)
        host, _, port = gw.listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, int(port)), family=family, backlog=BACKLOG)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(f"cannot listen on {gw.listen}: {reason}") from exc
        sock.setblocking(False)
        self._sock = sock
        for worker in self.pool:
            await self._spawn_worker(worker)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)
        self.spawn(self.journalist.watch(self._stopping.is_set))

    def _accept(self) -> None:
        assert self._sock is not None
        for _ in range(64):  # then let the loop serve the workers' records
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the next wakeup retries
                log.warning("accept failed: %s", exc.strerror or exc)
                return
            with conn:
                self._hand(conn, peer)

    def _hand(self, conn: socket.socket, peer: Any) -> None:
        live = [w for w in self.pool if w.alive]
        if not live:
            return  # no worker to serve it (all restarting): closed
        worker = min(live, key=lambda w: len(w.held))
        self._next_tid += 1
        ticket = HandedTicket(self._next_tid, worker)
        if not self._admit(ticket, peer):  # type: ignore[arg-type]
            return
        self._tickets[ticket.tid] = ticket
        worker.held.add(ticket.tid)
        if not worker.channel_send({"op": "conn", "t": ticket.tid}, [conn.fileno()]):
            self._closed(worker, ticket.tid)

    def _closed(self, worker: Worker, tid: int) -> None:
        worker.held.discard(tid)
        ticket = self._tickets.pop(tid, None)
        if ticket is not None:
            self.counters.admission.leave(ticket)

    # -- the workers --------------------------------------------------------------------

    async def _spawn_worker(self, worker: Worker) -> None:
        ours, theirs = pair()
        src = str(Path(conduit.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        env["CONDUIT_PROCESS_TAG"] = localfiles.PROCESS_TAG
        argv = [
            sys.executable,
            "-m",
            "conduit.gateway.worker",
            *("--fd", str(theirs.fileno()), "--config", str(self.config.source)),
            *("--index", str(worker.index), "--parent", str(os.getpid())),
        ]
        if logging.getLogger().isEnabledFor(logging.INFO):
            argv.append("-v")
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *argv,
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                # a terminal's Ctrl-C or hangup is the supervisor's to act on:
                # it stops or reloads its workers over their channels, in order
                start_new_session=True,
            )
        finally:
            theirs.close()
        worker.held.clear()
        worker.slots.clear()
        worker.started = time.monotonic()
        worker.channel = Channel(
            ours,
            lambda message, fds: self._from_worker(worker, message, fds),
            lambda: self.spawn(self._worker_gone(worker)),
        )
        self.journalist.greet(worker)

    async def _worker_gone(self, worker: Worker) -> None:
        """Its channel closed: it died (or is stopping). Journal it, replace it."""
        process = worker.process
        status = None
        if process is not None:
            _kill(process)  # a channel closed but a process alive serves no one
            status = await process.wait()
        held = len(worker.held)
        for tid in list(worker.held):
            self._closed(worker, tid)
        for user, count in worker.slots.items():
            self.user_sessions[user] -= count
            if self.user_sessions[user] <= 0:
                del self.user_sessions[user]
        worker.slots.clear()
        if self._stopping.is_set():
            await self.journalist.losses(worker, "gateway stopped")
            return
        how = _exit_text(status)
        log.error("worker %d exited (%s) holding %d connection(s)", worker.index, how, held)
        try:
            await self.recorder.record(
                WORKER_EVENT,
                "failed",
                worker=worker.index,
                pid=process.pid if process is not None else None,
                sessions=held,
                reason=f"worker process {how}; its connections were lost",
            )
        except Exception as exc:
            log.error("could not record the worker's death: %s", exc)
        await self.journalist.losses(worker, "worker process died")
        soon = time.monotonic() - worker.started < 2.0
        worker.failures = worker.failures + 1 if soon else 0
        await asyncio.sleep(min(30.0, 0.5 * (2 ** min(worker.failures, 6))) if soon else 0)
        if not self._stopping.is_set():
            await self._spawn_worker(worker)

    def _from_worker(self, worker: Worker, message: Message, fds: list[int]) -> None:
        for fd in fds:  # a worker never sends descriptors
            os.close(fd)
        op = message.get("op")
        if op == "rec":
            self.journalist.received(worker, message)
        elif op == "closed":
            self._closed(worker, int(message.get("t", 0)))
        elif op in ("leave", "protect"):
            ticket = self._tickets.get(int(message.get("t", 0)))
            if ticket is not None and ticket.worker is worker:
                if op == "leave":
                    self._tickets.pop(ticket.tid, None)
                    self.counters.admission.leave(ticket)
                else:
                    self.counters.admission.protect(ticket)
        elif op == "noise" and message.get("m") in ("refused", "auth_failure"):
            getattr(self.noise, message["m"])(*message.get("a", ()), **message.get("k", {}))
        elif op == "offence":
            with contextlib.suppress(ValueError):
                what = Offence(str(message.get("what")))
                self.defence.offended(ip_address(str(message.get("source"))), what)
        elif op == "claim":
            user, limit = str(message.get("user")), int(message.get("limit", 0))
            ok = self.user_sessions[user] < limit
            if ok:
                self.user_sessions[user] += 1
                worker.slots[user] += 1
            worker.channel_send({"op": "re", "id": message.get("id"), "ok": ok})
        elif op == "release":
            user = str(message.get("user"))
            if worker.slots[user] > 0:
                worker.slots[user] -= 1
                self.user_sessions[user] -= 1
        elif op == "reloaded":
            rid = int(message.get("rid") or 0)
            if rid in self._reloads:
                self._reloads[rid][worker.index] = message
                if len(self._reloads[rid]) >= sum(1 for w in self.pool if w.alive):
                    self._reload_done[rid].set()

    # -- reload and stop ----------------------------------------------------------------

    async def reload_policy(self, *, via: str = "api") -> ReloadResult:
        result = await super().reload_policy(via=via)
        if not result.applied:
            return result
        self._next_tid += 1
        rid = self._next_tid
        self._reloads[rid] = {}
        self._reload_done[rid] = done = asyncio.Event()
        sent = sum(1 for w in self.pool if w.channel_send({"op": "reload", "rid": rid}))
        try:
            if sent:
                await asyncio.wait_for(done.wait(), RELOAD_WAIT)
        except TimeoutError:
            log.error("policy reload: not every worker answered within %.0f s", RELOAD_WAIT)
        finally:
            answers = self._reloads.pop(rid, {})
            self._reload_done.pop(rid, None)
        for answer in answers.values():
            result.revoked.extend(answer.get("revoked") or [])
            if not answer.get("ok"):
                log.error("policy reload failed in a worker: %s", answer.get("error"))
        return result

    async def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
        for worker in self.pool:
            worker.channel_send({"op": "stop"})
        waits = [w.process.wait() for w in self.pool if w.process is not None]
        if waits:
            # their sessions end and journal session.end before the journal closes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), STOP_WAIT)
        for worker in self.pool:
            if worker.process is not None and worker.process.returncode is None:
                _kill(worker.process)
                await worker.process.wait()
            if worker.channel is not None:
                worker.channel.close()
        await super().stop()


def _kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL ``process`` without reaping it: ``Process.kill()`` polls first
    (``Popen.send_signal``), and a poll that reaps a dead worker takes its exit
    status from asyncio's child watcher, which then reports 255."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)


def _exit_text(status: int | None) -> str:
    if status is None:
        return "ended"
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
        return f"killed by signal {-status}"
    return f"exited with status {status}"
