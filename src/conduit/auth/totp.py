"""The second factor: who must answer a TOTP prompt, and checking the answer.

Codes follow RFC 6238 with what every authenticator app assumes: HMAC-SHA1,
six digits, 30-second steps. One step either side of the gateway's clock is
accepted (a phone a little off, a code typed as it changed), and each code
can be used once: the highest step a user has spent is kept in the state
database, and a code for that step or an earlier one is refused as a replay
(RFC 6238 section 5.2), across restarts too.
"""

from __future__ import annotations

import hmac
import time
from enum import Enum
from typing import Any

import pyotp

from conduit.auth.secrets import SecretStore
from conduit.config.auth import SecondFactor

STEP = 30
DIGITS = 6
#: Steps accepted either side of the current one.
SKEW = 1
ISSUER = "Conduit"


class Outcome(Enum):
    """What a code turned out to be; the value is the journal's reason."""

    OK = "ok"
    WRONG = "wrong TOTP code"
    REPLAYED = "TOTP code already used"
    NOT_ENROLLED = "second factor required but no TOTP secret is enrolled"


def required(
    rules: SecondFactor, user: str, roles: list[str] | tuple[str, ...], zone: str | None
) -> bool:
    """Whether ``user`` (with ``roles``, connecting from ``zone``) must answer TOTP.

    Any one match requires it: the user is listed, one of their roles is, or
    the zone their address is in is.
    """
    return (
        user in rules.totp_users
        or any(role in rules.totp_roles for role in roles)
        or (zone is not None and zone in rules.totp_zones)
    )


def enrol_event(user: str, replaced: bool, operator: str) -> dict[str, Any]:
    """The journal fields of an enrolment (``auth.totp_enrol``): who, by whom; no secret."""
    return {
        "principal": user,
        "replaced": replaced,
        "operator": operator[:64],
        "reason": "TOTP secret replaced" if replaced else "TOTP secret enrolled",
    }


def provisioning_uri(secret: str, user: str, node: str) -> str:
    """The ``otpauth://`` URI authenticator apps read (issuer Conduit, account user@node)."""
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP)
    return totp.provisioning_uri(name=f"{user}@{node}", issuer_name=ISSUER)


def matching_steps(secret: str, code: str, now: float) -> list[int]:
    """The time-steps within the skew window whose code is ``code``."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return []
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP)
    current = int(now) // STEP
    return [
        step
        for step in range(current - SKEW, current + SKEW + 1)
        if hmac.compare_digest(totp.at(step * STEP), code)
    ]


class Verifier:
    """Checks codes against the sealed secrets, spending each code once."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store

    def enrolled(self, user: str) -> bool:
        """Whether ``user`` has a secret that opens (SecretStoreError if it cannot):
        checked before the prompt, so nobody is asked a code that cannot be checked."""
        return self.store.secret(user) is not None

    def check(self, user: str, code: str, now: float | None = None) -> Outcome:
        secret = self.store.secret(user)
        if secret is None:
            return Outcome.NOT_ENROLLED
        steps = matching_steps(secret, code, time.time() if now is None else now)
        if not steps:
            return Outcome.WRONG
        if self.store.spend(user, steps) is None:
            return Outcome.REPLAYED
        return Outcome.OK
