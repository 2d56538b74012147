"""The second factor at login: a TOTP code over keyboard-interactive, after the key.

Who must answer one is ``[auth.second_factor]`` (a zone, a role or the user
matching is enough; :func:`conduit.auth.totp.required`). For them, a proven
public key does not log in: the gateway answers it with a *partial success*
naming ``keyboard-interactive`` alone (see :mod:`conduit._asyncssh.multifactor`),
the client prompts for the code, and only a right, unused code for the same
user completes the login. Until a key is proven, keyboard-interactive is not
offered at all, so it can never log anyone in alone; every wrong or replayed
code counts toward ``max_auth_tries`` like a wrong key.

A user who must answer and has no secret enrolled is refused (fail closed),
with the reason in the journal and in the client's disconnect message; so is
everyone who must answer while the secrets cannot be read (a missing or
world-readable key file), since no code could be checked.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncssh

from conduit._asyncssh.multifactor import FAILURE, PARTIAL, SUCCESS
from conduit.audit.events import EventType
from conduit.auth import totp
from conduit.auth.secrets import SecretStoreError

if TYPE_CHECKING:
    from conduit.gateway.app import Gateway
    from conduit.gateway.server import Connection

log = logging.getLogger("conduit.gateway")

KBDINT = "keyboard-interactive"
PROMPT = "Verification code: "
TITLE = "Conduit second factor"
INSTRUCTION = "Enter the 6-digit code from your authenticator app."
#: Journal reason when the secrets cannot be read (the detail follows it).
UNAVAILABLE = "second factor unavailable"


class SecondFactor:
    """One connection's progress through the second factor."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.proven: str | None = None  # whose key was proven, code still owed
        self.proven_key: asyncssh.SSHKey | None = None
        self.passed: str | None = None  # whose code was accepted

    def pending(self, username: str | None) -> bool:
        """Whether ``username`` has proven a key and owes a code."""
        return self.proven is not None and self.proven == username

    def served(self, username: str, method: str) -> bool:
        """The methods asyncssh consults the application on, for ``username`` now."""
        if method == "publickey":
            return not self.pending(username)
        return method == KBDINT and self.pending(username)

    def refusal(self, username: str, method: str) -> str | None:
        """The journal's reason for a request :meth:`served` turned down, if special."""
        if method == "publickey" and self.pending(username):
            return "key already proven: a TOTP code is due"
        if method == KBDINT and self.proven is not None:
            return "keyboard-interactive for a user whose key was not proven"
        return None

    def required(self, username: str) -> bool:
        c = self.connection
        config = c.gateway.config
        user = config.users.get(username)
        return totp.required(
            config.auth.second_factor, username, user.roles if user else [], c.zone
        )

    # -- the verdict on each success asyncssh reports (multifactor.Decide) ---------------

    def decide(self, username: str, method: str) -> str:
        c = self.connection
        if method == "publickey":  # a key or a certificate, proven to asyncssh
            if not self.required(username):
                c.factors = ["publickey"]
                return SUCCESS
            try:
                enrolled = c.gateway.totp().enrolled(username)
            except (SecretStoreError, sqlite3.Error, OSError) as exc:
                self._unavailable(username, "publickey", exc)
                return FAILURE
            if not enrolled:
                self._refuse(
                    username,
                    "publickey",
                    totp.Outcome.NOT_ENROLLED.value,
                    f"a second factor (TOTP) is required and none is enrolled for this "
                    f"user: ask an administrator to run `conduit user totp {username}`",
                )
                return FAILURE
            self.proven, self.proven_key, self.passed = username, c.key, None
            return PARTIAL
        if method == KBDINT and self.pending(username) and self.passed == username:
            c.key = self.proven_key  # the key proven for this user, whatever came since
            c.factors = ["publickey", "totp"]
            return SUCCESS
        return FAILURE

    # -- keyboard-interactive ----------------------------------------------------------------

    def challenge(self, username: str) -> tuple[str, str, str, list[tuple[str, bool]]] | bool:
        if not self.pending(username):
            return False
        return (TITLE, INSTRUCTION, "", [(PROMPT, False)])

    def respond(self, username: str, responses: Sequence[str]) -> bool:
        if not self.pending(username):
            return False
        if len(responses) != 1:
            outcome = totp.Outcome.WRONG
        else:
            try:
                outcome = self.connection.gateway.totp().check(username, responses[0])
            except (SecretStoreError, sqlite3.Error, OSError) as exc:
                self._unavailable(username, KBDINT, exc)
                return False
        if outcome is totp.Outcome.OK:
            self.passed = username
            return True
        key = self.proven_key
        self.connection._failed(
            KBDINT,
            username,
            outcome.value,
            factor="totp",
            key_fingerprint=key.get_fingerprint() if key else None,
        )
        return False

    # -- refusals ------------------------------------------------------------------------------

    def _unavailable(self, username: str, method: str, exc: Exception) -> None:
        log.error("second factor unavailable: %s", exc)
        self._refuse(
            username,
            method,
            f"{UNAVAILABLE}: {exc}",
            "a second factor (TOTP) is required and cannot be checked on this gateway now",
        )

    def _refuse(self, username: str, method: str, reason: str, message: str) -> None:
        """Count and journal the refusal, then tell the client why and close."""
        c = self.connection
        key = c.key
        fingerprint = key.get_fingerprint() if key else None
        counted = c._failed(method, username, reason, factor="totp", key_fingerprint=fingerprint)
        if counted and c.conn is not None:  # (False: max_auth_tries already closed it)
            c.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, message)


async def journal_enrolment(gateway: Gateway, request: dict[str, Any]) -> dict[str, Any]:
    """The control socket's ``totp-enrolled``: ``conduit user totp`` cannot write
    the journal the running gateway holds, so it asks the gateway to, before it
    stores the new secret (the record never carries the secret)."""
    user, replaced, operator = request.get("user"), request.get("replaced"), request.get("operator")
    if not isinstance(user, str) or user not in gateway.config.users:
        return {"ok": False, "error": "not a user of the gateway's policy"}
    if not isinstance(replaced, bool) or not isinstance(operator, str):
        return {"ok": False, "error": "bad request: replaced (bool) and operator (str) needed"}
    try:
        await gateway.recorder.record(
            EventType.AUTH_TOTP_ENROL, "success", **totp.enrol_event(user, replaced, operator)
        )
    except Exception as exc:  # the journal is down: the CLI must not enrol
        return {"ok": False, "error": f"the audit journal cannot be written: {exc}"}
    return {"ok": True}
