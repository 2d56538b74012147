"""A policy reload that says what it did: applied (and whom it revoked) or refused.

Whoever asks for a reload (SIGHUP, the control socket behind ``conduit
reload``) gets a :class:`ReloadResult`, and the journal gets one
``policy.reload`` record either way, with the reason when it failed. A bad
file never reaches the console as a traceback: any error while the new
policy is built (a file ``check`` passed that the gateway still cannot serve:
an area folder it cannot open, a device it cannot build) is one line, and the
policy in force stays.

Once a new policy is in force, what it no longer allows stops now, not at the
next login:

- a session whose user is gone, or whose key or certificate would now be
  refused (removed, revoked by the revocation list, its CA no longer
  trusted, its from= no longer matching), is revoked;
- a session with an open transfer the new policy refuses (a grant or conduit
  removed, a size limit lowered below what has arrived) is revoked;
- any other session stays open; its next request is decided by the new
  policy (every operation asks it, and each open transfer asks it again
  before each read and before it commits).

Revoking marks the session (so nothing it has open can commit and no request
of it is served from then on), closes the SSH connection in the same step
with the reason the client reads (:mod:`conduit._asyncssh.goodbye`), and
journals ``session.revoke`` with it; its open uploads are aborted (nothing
appears under their final names) and recorded as failed.

Devices that the new policy removes or changes lose their relay connection
(``device.close``); the next use of a changed device connects afresh with its
new settings.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncssh

from conduit._asyncssh import goodbye
from conduit.audit.events import EventType
from conduit.names import escape
from conduit.policy import Request

if TYPE_CHECKING:
    from conduit.gateway.app import Gateway
    from conduit.gateway.server import Connection
    from conduit.storage.base import Backend

log = logging.getLogger("conduit.gateway")

REVOKED_TEXT = "access revoked by a policy reload"
"""What a revoked client is told (the SSH disconnect message)."""


@dataclass
class ReloadResult:
    """What a reload did, as the control socket answers it."""

    applied: bool
    path: str | None
    error: str | None = None
    revoked: list[dict[str, str]] = field(default_factory=list)
    devices_closed: list[str] = field(default_factory=list)

    def answer(self) -> dict[str, Any]:
        if not self.applied:
            return {"ok": False, "outcome": "failed", "path": self.path, "error": self.error}
        return {
            "ok": True,
            "outcome": "success",
            "path": self.path,
            "revoked_sessions": self.revoked,
            "devices_closed": self.devices_closed,
        }


def one_line(exc: BaseException) -> str:
    """An error as one console-safe line: a ConfigError's problems joined by ``; ``."""
    problems = getattr(exc, "problems", None)
    if isinstance(problems, list) and problems:
        where = getattr(exc, "source", None)
        text = f"{where}: " + "; ".join(str(p) for p in problems)
    else:
        text = str(exc) or exc.__class__.__name__
        if not isinstance(exc, ValueError | OSError):
            text = f"{exc.__class__.__name__}: {text}"
    return escape(" ".join(text.split()))


def revocation(connection: Connection, gateway: Gateway) -> str | None:
    """Why ``connection`` may not go on under the policy now in force, or None."""
    user = connection.user
    if user is None or not connection.authenticated:
        return None
    if user not in gateway.config.users:
        return "user removed from the policy"
    key = connection.key
    if connection.certificate is None and (
        key is None or key.public_data not in gateway.identity.keys_of(user)
    ):
        return "key removed from the policy"
    why = connection.standing()
    if why is not None:
        return f"login no longer allowed: {why}"
    if "totp" not in connection.factors and connection.second.required(user):
        return "a second factor (TOTP) is now required"
    policy = gateway.policy
    for op, path, size in connection.traffic.open_transfers():
        decision = policy.decide(Request(user, connection.source, op, path, size))
        if not decision.allowed:
            return f"{op} {path} no longer allowed: {decision.detail}"
    return None


async def revoke_sessions(gateway: Gateway) -> list[dict[str, str]]:
    """Revoke every session the policy now in force no longer allows."""
    doomed = []
    for connection in list(gateway.connections):
        reason = revocation(connection, gateway)
        if reason is not None:
            # Marked before any await: from here on nothing of it commits.
            connection.traffic.revoked = reason
            doomed.append((connection, reason))
    # Each connection is closed in this same step, before any request of it
    # can be answered "revoked": the client reads the reason (the disconnect
    # message) instead of leaving on its first refused request. The records
    # are started first, so each session.revoke is queued ahead of the
    # session.end its closing writes.
    records = [
        asyncio.ensure_future(_record_revocation(gateway, connection, reason))
        for connection, reason in doomed
    ]
    for connection, reason in doomed:
        log.warning(
            "session %s (%s from %s) revoked: %s",
            connection.id,
            connection.user,
            connection.source,
            reason,
        )
        if connection.conn is not None:
            goodbye.disconnect(connection.conn, asyncssh.DISC_BY_APPLICATION, REVOKED_TEXT)
    await asyncio.gather(*records)
    return [
        {"session": connection.id, "principal": connection.user or "", "reason": reason}
        for connection, reason in doomed
    ]


async def _record_revocation(gateway: Gateway, connection: Connection, reason: str) -> None:
    try:
        await gateway.recorder.record(
            EventType.SESSION_REVOKE,
            "success",
            principal=connection.user,
            source=str(connection.source),
            zone=connection.zone,
            session=connection.id,
            reason=reason,
            open_transfers=connection.traffic.transfers_open,
        )
    except Exception as exc:  # the journal failing must not keep the session alive
        log.error("could not record session.revoke for %s: %s", connection.id, exc)


async def close_devices(
    gateway: Gateway, before: dict[str, Backend], removed: set[str]
) -> list[str]:
    """Close the relay connections of devices the new policy removed or changed."""
    closed = []
    for name, backend in before.items():
        if gateway.devices.get(name) is backend:
            continue  # unchanged: keeps its connection
        reason = "device removed from the policy" if name in removed else "device settings changed"
        try:
            await asyncio.wait_for(backend.close(), 10)
            error = None
        except Exception as exc:
            error = one_line(exc)
        closed.append(name)
        log.warning("device %s: relay connection closed: %s", name, reason)
        try:
            await gateway.recorder.record(
                EventType.DEVICE_CLOSE,
                "failed" if error else "success",
                device=name,
                reason=reason,
                error=error,
            )
        except Exception as exc:
            log.error("could not record device.close for %s: %s", name, exc)
    return closed


async def reload_policy(gateway: Gateway, *, via: str) -> ReloadResult:
    """Reload the policy file; journal and return what happened. Never raises
    for a bad file: the result says why it was not applied."""
    source = gateway.config.source
    path = str(source) if source else None
    devices_before = dict(gateway.devices)
    try:
        await gateway.reload_off_loop()
    except Exception as exc:
        reason = one_line(exc)
        log.error("policy reload refused, keeping the current policy: %s", reason)
        await _record(gateway, "failed", path=path, via=via, reason=reason)
        return ReloadResult(False, path, error=reason)
    removed = set(devices_before) - set(gateway.config.devices)
    result = ReloadResult(True, path)
    log.warning("policy reloaded from %s", path)
    await _record(gateway, "success", path=path, via=via)
    result.revoked = await revoke_sessions(gateway)
    result.devices_closed = await close_devices(gateway, devices_before, removed)
    return result


async def _record(gateway: Gateway, outcome: str, **fields: Any) -> None:
    try:
        await gateway.recorder.record(EventType.POLICY_RELOAD, outcome, **fields)
    except Exception as exc:  # the answer must still reach whoever asked
        log.error("could not record policy.reload: %s", exc)
