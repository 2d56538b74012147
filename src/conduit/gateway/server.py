"""asyncssh glue: one :class:`Connection` per TCP client (its channels: session.py).

Authentication, the connection and session limits asyncssh lacks (MaxStartups,
MaxAuthTries, MaxSessions, idle timeout) and the choice of service (SFTP
subsystem or the ``scp -t|-f`` exec command; nothing else) live here. What a
session may do with files is not decided here: that is :class:`Operations`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import asyncssh

from conduit._asyncssh import authwatch, certwatch, goodbye, multifactor
from conduit.auth import certs
from conduit.auth.identity import Verdict
from conduit.config.crypto import negotiated
from conduit.errors import AuditUnavailable
from conduit.gateway.admission import Admission
from conduit.gateway.context import Traffic
from conduit.gateway.gate import Ticket
from conduit.gateway.resources import Descriptors
from conduit.gateway.session import Session
from conduit.gateway.twofactor import SecondFactor
from conduit.transfer.budget import ReorderBudget

if TYPE_CHECKING:
    from conduit.gateway.host import ConnectionHost

log = logging.getLogger("conduit.gateway")
#: Why logins are refused while the journal cannot be written (on_failure "closed").
JOURNAL_DOWN = "audit journal unavailable: logins refused until it can be written"

#: What asyncssh 2.24.1 passes to connection_lost when login_grace_time runs out.
LOGIN_TIMEOUT = "Login timeout expired"
#: The ``reason`` of the ``connection.refused`` record for such a connection.
GRACE_EXPIRED = "login grace time expired before authentication"


@dataclass
class Counters:
    """Gateway-wide state behind the limits."""

    # Connections that have not authenticated yet (MaxStartups).
    admission: Admission = field(default_factory=Admission)
    sessions_per_user: Counter[str] = field(default_factory=Counter)
    handles_per_user: Counter[str] = field(default_factory=Counter)
    # upload bytes held out of order, all sessions together (limit set by the gateway)
    reorder: ReorderBudget = field(default_factory=lambda: ReorderBudget(0))
    descriptors: Descriptors = field(default_factory=lambda: Descriptors(0))
    #: In a worker process: the per-user session count lives with the
    #: supervisor, across all workers (see worker.py); None: counted here.
    user_slots: UserSlots | None = None

    @property
    def unauthenticated(self) -> int:
        return len(self.admission)


class UserSlots(Protocol):
    """Per-user session slots counted elsewhere (a worker asks its supervisor)."""

    async def claim(self, user: str, limit: int) -> bool: ...

    def release(self, user: str) -> None: ...


class Connection(asyncssh.SSHServer):
    """One client connection: authentication, limits, session bookkeeping."""

    def __init__(self, gateway: ConnectionHost) -> None:
        self.gateway = gateway
        self.id = uuid.uuid4().hex[:16]
        self.conn: asyncssh.SSHServerConnection | None = None
        self.source: IPv4Address | IPv6Address = ip_address("0.0.0.0")  # noqa: S104
        self.user: str | None = None
        self.authenticated = False
        self.ticket: Ticket | None = None  # its place among the waiting (admission)
        self.failures = 0
        self.asked_none: str | None = None  # the user name of a first "none" request
        self.key: asyncssh.SSHKey | None = None
        # the certificate that logged in, and the one key its signature check may use
        self.certificate: certs.Certificate | None = None
        self._primed: tuple[str, bytes] | None = None
        self.login_fields: dict[str, Any] = {}
        self.second = SecondFactor(self)  # TOTP after the key, where required
        self.factors = ["publickey"]  # what the login took (session.start's ``factors``)
        self.sessions = 0
        self.refused_sessions = 0
        self.traffic = Traffic()
        self.last_activity = time.monotonic()
        self.idle_task: asyncio.Task[None] | None = None
        # session.start's fate: its session.end is recorded only after it, and
        # only if it is on record (a refused start is a session the journal
        # never showed, so it does not end there either)
        self.start_settled = asyncio.Event()
        self.start_recorded = False

    # -- connection lifecycle -----------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.source = ip_address(peer[0].split("%")[0])
        # Admitted (or refused) at accept time, before asyncssh built this
        # connection: see gate.py. Claim the ticket the gate holds for it.
        ticket = self.gateway.gate.admitting
        if ticket is None:  # not through the gate: fail closed
            conn.abort()
            return
        ticket.claimed = True
        self.ticket = ticket
        authwatch.watch(conn, self._other_method, self.second.served)
        multifactor.install(conn, self.second.decide)
        certwatch.watch(conn, self._judge_certificate)

    def connection_lost(self, exc: Exception | None) -> None:
        ticket = self.ticket
        was_waiting = ticket is not None
        self._leave_unauthenticated()
        if ticket is not None and not ticket.dropped and self.gateway.auditor_available():
            # scored against its source (see defending.py); not when the
            # gateway itself dropped it or refused every login
            self.gateway.defence.ended(self.source, self.failures, exc)
        if (
            was_waiting
            and not self.authenticated
            and isinstance(exc, asyncssh.ConnectionLost)
            and str(exc) == LOGIN_TIMEOUT
        ):
            # The gateway dropped it, as sshd's "Timeout before authentication":
            # journalled in aggregate with the other dropped connections.
            self.gateway.noise.refused(str(self.source), GRACE_EXPIRED)
        if not self.authenticated and self.asked_none is not None and not self.failures:
            # The client asked "none", heard "publickey" and gave up: it only
            # tried methods this gateway does not offer (password, ...). Or
            # its key was proven and it left at the TOTP prompt.
            proven = self.second.proven
            self.gateway.noise.auth_failure(
                str(self.source),
                proven or self.asked_none,
                "keyboard-interactive" if proven else "none",
                "key proven, but no TOTP code given" if proven else "client offered no public key",
                zone=self.zone,
                session=self.id,
            )
        if self.idle_task:
            self.idle_task.cancel()
        self.gateway.connections.discard(self)  # a reload has nothing left to revoke
        if self.authenticated and self.user:
            end = {
                "bytes_in": self.traffic.bytes_in,
                "bytes_out": self.traffic.bytes_out,
                "error": str(exc) if exc else None,
            }
            if self.start_settled.is_set():
                self._record_end(end)
            else:  # a client that left at once: its end waits for its start
                self.gateway.spawn(self._end_after_start(end))

    def record(self, type: str, outcome: str, **fields: Any) -> None:
        """Record an event about this connection (in the background: the SSH
        callbacks that call this cannot wait)."""
        self.gateway.spawn(self._record(type, outcome, **fields))

    async def _record(self, type: str, outcome: str, **fields: Any) -> None:
        identity: dict[str, Any] = {
            "principal": self.user if self.authenticated else None,
            "source": str(self.source),
            "zone": self.zone,
            "session": self.id,
        }
        await self.gateway.recorder.record(type, outcome, **identity, **fields)

    async def _record_start(self, **fields: Any) -> None:
        """``session.start``, and fail closed if the journal refuses it: the
        login that finds the journal gone (folder removed, disk full) was
        admitted while it still looked writable, and a session the journal
        does not show is not kept. Its requests wait for records of their own,
        so it cannot have moved a file; it is cut with the reason."""
        try:
            await self._record("session.start", "success", **fields)
            self.start_recorded = True
        except AuditUnavailable:
            if self.conn is not None:
                goodbye.disconnect(self.conn, asyncssh.DISC_BY_APPLICATION, JOURNAL_DOWN)
            raise  # and logged as a background record that failed
        finally:
            self.start_settled.set()

    def _record_end(self, fields: dict[str, Any]) -> None:
        """``session.end``, only if its ``session.start`` is on record: a
        refused start is a session the journal never showed."""
        if self.start_recorded:
            self.record("session.end", "success", **fields)

    async def _end_after_start(self, fields: dict[str, Any]) -> None:
        await self.start_settled.wait()
        self._record_end(fields)

    def _leave_unauthenticated(self) -> None:
        if self.ticket is not None:
            self.gateway.counters.admission.leave(self.ticket)
            self.ticket = None

    @property
    def zone(self) -> str | None:
        return self.gateway.policy.zone_of(self.source)

    # -- authentication -----------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        self.user = username
        if not self.gateway.auditor_available() and self.conn is not None:
            # fail closed, and say why: not a bare "Permission denied"
            self.conn.send_auth_banner(f"Conduit: {JOURNAL_DOWN}.\r\n")
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return self.second.pending(self.user)  # only once a key is proven (twofactor.py)

    def public_key_auth_supported(self) -> bool:
        return not self.second.pending(self.user)

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        return self.second.challenge(username)

    def validate_kbdint_response(self, username: str, responses: Any) -> bool:
        return self.second.respond(username, responses)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self._primed is not None and self._primed == (username, key.public_data):
            # a certificate _judge_certificate accepted: asyncssh now checks its signature
            self._primed = None
            self.key = key
            return True
        self._primed = None
        reason = self._refusal(username, key)
        if reason is None:
            self.key = key  # the key the client then proves it holds
            self.certificate = None
            self.login_fields = {}
            if self.ticket is not None:
                self.gateway.counters.admission.protect(self.ticket)
            return True
        self._failed("publickey", username, reason, key_fingerprint=key.get_fingerprint())
        if reason == JOURNAL_DOWN and self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, JOURNAL_DOWN)
        return False

    def _other_method(self, username: str, method: str) -> bool:
        """A request for a method Conduit does not offer (see authwatch)."""
        if method == "none" and self.asked_none is None:
            # OpenSSH clients start with "none" to learn the methods; like
            # sshd, the first one is not a failure.
            self.asked_none = username
            return True
        reason = self.second.refusal(username, method) or f"{method} authentication is not offered"
        return self._failed(method, username, reason)

    def _failed(self, method: str, username: str, reason: str, **fields: Any) -> bool:
        """Count and record a failed attempt; False if it closed the connection."""
        self.failures += 1
        self.gateway.noise.auth_failure(
            str(self.source), username, method, reason, zone=self.zone, session=self.id, **fields
        )
        if self.failures >= self.gateway.config.gateway.limits.max_auth_tries and self.conn:
            self.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many authentication failures"
            )
            return False
        return True

    def _judge_certificate(self, username: str, blob: bytes) -> bytes | None:
        """An OpenSSH certificate offered (see certwatch): the certified plain
        key if it may log in as ``username``, else None (journalled)."""
        self._primed = None
        try:
            cert = certs.parse(blob)
        except certs.CertificateError as exc:
            self._failed("publickey", username, f"certificate refused: {exc}")
            return None
        verdict = self._gatekeeping() or self.gateway.identity.check_certificate(
            username, cert, self.source
        )
        if verdict.reason is not None:
            fingerprint = _fingerprint(cert.key_blob)
            self._failed(
                "publickey",
                username,
                verdict.reason,
                key_fingerprint=fingerprint,
                **verdict.fields,
            )
            if verdict.reason == JOURNAL_DOWN and self.conn is not None:
                self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, JOURNAL_DOWN)
            return None
        self.certificate = cert
        self.login_fields = dict(verdict.fields)
        self._primed = (username, cert.key_blob)
        if self.ticket is not None:
            self.gateway.counters.admission.protect(self.ticket)
        return cert.key_blob

    def _gatekeeping(self) -> Verdict | None:
        """Refusals that come before any key is looked at."""
        if not self.gateway.auditor_available():
            return Verdict(JOURNAL_DOWN)
        if self.zone is None:
            return Verdict("source address is in no zone")
        return None

    def _refusal(self, username: str, key: asyncssh.SSHKey) -> str | None:
        verdict = self._gatekeeping() or self.gateway.identity.check_key(
            username, key.public_data, self.source
        )
        return verdict.reason

    def standing(self) -> str | None:
        """Why this login would be refused now (a reload changed the keys, the
        CAs or the revocation list), or None."""
        if self.user is None or self.key is None:
            return "no key"
        identity = self.gateway.identity
        if self.certificate is not None:
            return identity.check_certificate(self.user, self.certificate, self.source).reason
        return identity.check_key(self.user, self.key.public_data, self.source).reason

    def auth_completed(self) -> None:
        self._leave_unauthenticated()
        if self._key_revoked():
            return
        self.authenticated = True
        self.gateway.connections.add(self)
        assert self.conn is not None and self.user is not None
        key = self.key
        self.gateway.spawn(
            self._record_start(
                auth_method="publickey",
                factors=self.factors,
                client_version=self.conn.get_extra_info("client_version"),
                key_fingerprint=key.get_fingerprint() if key else None,
                **self.login_fields,
                **negotiated(self.conn),
            )
        )
        idle = self.gateway.config.gateway.limits.idle_timeout
        if idle:
            self.idle_task = asyncio.ensure_future(self._watch_idle(idle))

    def _key_revoked(self) -> bool:
        """A reload between the key's check and its signature may have removed
        it (or its user, or revoked it); the reload's revocation pass did not
        see this connection yet, so refuse it here."""
        why = self.standing()
        if why is None:
            return False
        self._failed("publickey", self.user or "", f"refused after a policy reload: {why}")
        if self.conn is not None:
            goodbye.disconnect(
                self.conn, asyncssh.DISC_BY_APPLICATION, "access revoked by a policy reload"
            )
        return True

    async def _watch_idle(self, idle: float) -> None:
        while True:
            await asyncio.sleep(min(idle, 5.0))
            quiet = time.monotonic() - self.last_activity
            if quiet >= idle and not self.traffic.transfers_open and self.conn:
                log.info("closing idle connection %s (%s)", self.id, self.user)
                goodbye.disconnect(self.conn, asyncssh.DISC_BY_APPLICATION, "idle timeout")
                return

    # -- sessions ---------------------------------------------------------------------------

    def session_requested(self) -> Session | bool:
        limits = self.gateway.config.gateway.limits
        assert self.user is not None
        per_user = self.gateway.counters.sessions_per_user
        if self.sessions >= limits.max_sessions_per_connection:
            self._session_refused(
                f"at most {limits.max_sessions_per_connection} sessions per connection"
            )
        if per_user[self.user] >= limits.max_sessions_per_user:
            self._session_refused(f"at most {limits.max_sessions_per_user} sessions per user")
        short = self.gateway.counters.descriptors.short()
        if short is not None:
            log.warning("session refused for %s: %s", self.user, short)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, short)
        self.sessions += 1
        slots = self.gateway.counters.user_slots
        if slots is not None:  # asyncssh awaits a coroutine given as the session
            return self._claimed(slots, limits.max_sessions_per_user)  # type: ignore[return-value]
        per_user[self.user] += 1
        return Session(self)

    async def _claimed(self, slots: UserSlots, limit: int) -> Session:
        """The session once the supervisor granted its per-user slot."""
        assert self.user is not None
        if not await slots.claim(self.user, limit):
            self.sessions -= 1
            self._session_refused(f"at most {limit} sessions per user")
        return Session(self)

    def _session_refused(self, reason: str) -> NoReturn:
        """Refuse a session over a limit, telling the client why; the first
        refusal of a connection is journalled (``session.start denied``), the
        rest only counted, so a client looping on channel opens cannot flood
        the journal."""
        self.refused_sessions += 1
        if self.refused_sessions == 1:
            log.warning("session refused for %s: %s", self.user, reason)
            self.record("session.start", "denied", reason=reason)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)

    def session_closed(self) -> None:
        assert self.user is not None
        self.sessions -= 1
        slots = self.gateway.counters.user_slots
        if slots is not None:
            slots.release(self.user)
        else:
            self.gateway.counters.sessions_per_user[self.user] -= 1


def _fingerprint(blob: bytes) -> str | None:
    try:
        return certs.key_from_blob(blob).get_fingerprint()
    except (asyncssh.KeyImportError, ValueError):
        return None
