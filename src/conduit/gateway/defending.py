"""The defender in the running gateway: refuse banned sources at accept, score
connections that end unauthenticated, journal every ban and unban.

The bookkeeping is :mod:`conduit.auth.defender`; this is where its inputs come
from (how an asyncssh connection ended) and where its outputs go (the
journal, the noise log, the console):

* a banned source's connection is closed at accept (see gate.py), before an
  SSH byte is spent on it, and counted in the noise log's ``connection.refused``
  summaries (reason :data:`BANNED`), so a flood of them is a few records;
* every ban is a ``defender.ban`` record and a console line; every unban
  (``conduit defender unban``, an allow-list grown by a reload) a
  ``defender.unban`` record: both reach the SIEM sinks like any record;
* unbans made by the CLI are picked up when it asks over the control socket
  (command ``defender``), at start, on reload, and at most once a second while
  a banned source knocks -- so an unban works even when the control socket
  cannot be reached.

A connection the gateway itself dropped (evicted to make room, the gateway
stopping, the journal down) is not the source's fault and scores nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncssh

from conduit.audit.events import EventType
from conduit.auth.bantable import when
from conduit.auth.defender import Address, Ban, Defender, Offence, Unban, active
from conduit.config import Config
from conduit.gateway.admission import PER_SOURCE
from conduit.gateway.server import LOGIN_TIMEOUT
from conduit.state import STATE_FILE, StateDB

log = logging.getLogger("conduit.gateway")

#: The ``reason`` of the ``connection.refused`` summaries of banned sources.
BANNED = "source banned by the defender"
#: Sources ``conduit defender list`` gets from a running gateway, at most.
LIVE_ROWS = 1000
#: How often, at most, a knocking banned source makes the gateway look for unbans.
UNBAN_POLL = 1.0

#: Errors that mean the client broke the SSH protocol (not merely went away or
#: shared no algorithm with the gateway: an old client is not an attacker).
PROTOCOL_ERRORS = (
    asyncssh.ProtocolError,
    asyncssh.MACError,
    asyncssh.CompressionError,
    asyncssh.ProtocolNotSupported,
    asyncssh.IllegalUserName,
)

Record = Callable[..., Coroutine[Any, Any, Any]]


def offence(failures: int, exc: Exception | None) -> Offence:
    """How an unauthenticated connection ended, as the defender scores it."""
    if isinstance(exc, PROTOCOL_ERRORS):
        return Offence.PROTOCOL_ERROR
    if isinstance(exc, asyncssh.ConnectionLost) and str(exc) == LOGIN_TIMEOUT:
        return Offence.GRACE_EXPIRED
    if failures:
        return Offence.AUTH_FAILED
    return Offence.NO_AUTH


class Defence:
    """The gateway's defender (None while the policy asks for none)."""

    def __init__(
        self,
        record: Record,
        refused: Callable[[str, str], None],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self._record = record
        self._refused = refused
        self._spawn = spawn
        self.defender: Defender | None = None
        self._db: StateDB | None = None
        self._data_dir: Path | None = None
        self._polled = 0.0
        self.stopping = False

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self, config: Config) -> None:
        """Load the bans of the last run (the data folder exists by now). An
        unreadable state file fails the start: serving without the bans in
        force would pardon every banned source."""
        try:
            await self.configure(config)
        except sqlite3.Error as exc:  # as an OSError: `serve` says it in one line
            path = config.gateway.data_dir / STATE_FILE
            raise OSError(f"the defender's state {path} is unusable ({exc})") from exc

    async def configure(self, config: Config) -> None:
        """Start, change or stop defending, as ``config`` says (start, reload)."""
        if not active(config.auth):
            self.defender = None
            return
        settings = config.auth.defender
        if self.defender is None or self._data_dir != config.gateway.data_dir:
            self._data_dir = config.gateway.data_dir
            if self._db is not None:
                self._db.close()
            self._db = StateDB.open(config.gateway.data_dir)
            self.defender = Defender(settings, self._db)
            lifted = []
        else:
            lifted = self.defender.configure(settings)
        for unban in lifted + self.defender.take_unbans():
            await self._unbanned(unban)

    async def reconfigure(self, config: Config) -> None:
        """After a reload: as :meth:`configure`, but a failing state file keeps
        the defender as it was (the reload itself is done)."""
        try:
            await self.configure(config)
        except Exception as exc:
            log.error("defender: new settings not applied, the old ones stay: %s", exc)

    async def sync(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """Journal and apply the unbans the CLI made (the control socket's ``defender``)."""
        if self.defender is None:
            return {"ok": True, "active": False, "unbanned": []}
        unbans = self.defender.take_unbans()
        for unban in unbans:
            await self._unbanned(unban)
        return {"ok": True, "active": True, "unbanned": [u.source for u in unbans]}

    async def listing(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """The sources as held now (the control socket's ``defender-list``)."""
        if self.defender is None:
            return {"ok": True, "active": False, "sources": []}
        rows = self.defender.live(LIVE_ROWS)
        return {"ok": True, "active": True, "sources": [asdict(r) for r in rows]}

    async def close(self) -> None:
        """Clean shutdown: journal pending unbans, keep the scores for the next run."""
        self.stopping = True
        if self.defender is not None:
            try:
                await self.sync()
                self.defender.save()
            except Exception as exc:  # the state database or the journal failing
                log.error("defender: could not save its state: %s", exc)
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- accept time --------------------------------------------------------------------

    def refuse(self, address: Address) -> bool:
        """True if ``address``'s source is banned: close it unheard."""
        defender = self.defender
        ban = None if defender is None else defender.ban_of(address)
        if ban is None:
            return False
        assert defender is not None
        now = time.monotonic()
        if now - self._polled >= UNBAN_POLL:
            self._polled = now
            try:
                unbans = defender.take_unbans()
            except Exception as exc:  # a busy or broken state file: keep the ban
                log.warning("defender: could not look for unbans: %s", exc)
                unbans = []
            for unban in unbans:
                self._spawn(self._unbanned(unban))
            if unbans and defender.banned(address) is None:
                return False
        self._refused(ban[0], BANNED)
        return True

    # -- scoring ------------------------------------------------------------------------

    def ended(self, address: Address, failures: int, exc: Exception | None) -> None:
        """An unauthenticated connection ended on the client's account."""
        if self.defender is not None and not self.stopping:
            self._penalise(address, offence(failures, exc))

    def offended(self, address: Address, what: Offence) -> None:
        """An unauthenticated connection a worker process served ended on the
        client's account (the worker judged it with :func:`offence`)."""
        if self.defender is not None and not self.stopping:
            self._penalise(address, what)

    def admission_refused(self, address: Address, reason: str) -> None:
        """Admission refused a newcomer; only its own excess counts against it."""
        if self.defender is not None and reason == PER_SOURCE:
            self._penalise(address, Offence.STARTUPS_EXCEEDED)

    def _penalise(self, address: Address, what: Offence) -> None:
        assert self.defender is not None
        try:
            ban = self.defender.penalise(address, what)
        except Exception as exc:  # the state file: the ban is kept in memory
            log.error("defender: could not write a ban to the state database: %s", exc)
            return
        if ban is not None:
            self._spawn(self._banned(ban))

    # -- the journal ----------------------------------------------------------------------

    async def _banned(self, ban: Ban) -> None:
        log.warning(
            "defender: %s banned until %s (ban %d, score %s: %s)",
            ban.source,
            when(ban.until),
            ban.bans,
            ban.score,
            ban.reasons,
        )
        await self._record(
            EventType.DEFENDER_BAN,
            "denied",
            source=ban.source,
            score=ban.score,
            bans=ban.bans,
            until=when(ban.until),
            duration=ban.duration,
            reason=ban.reasons,
        )

    async def _unbanned(self, unban: Unban) -> None:
        log.warning("defender: %s unbanned (%s)", unban.source, unban.by)
        await self._record(
            EventType.DEFENDER_UNBAN,
            "success",
            source=unban.source,
            by=unban.by,
            until=when(unban.until) if unban.until else None,
        )
