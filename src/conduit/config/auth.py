"""``[auth]``: how people prove who they are, beyond the keys under each user.

Certificates from a trusted user CA, a revocation list, a second factor
(TOTP over keyboard-interactive) by zone, role or user, and the defender that
throttles sources hammering the gateway. Every part is off until the file
asks for it: a policy without ``[auth]`` behaves as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from conduit.config.types import CheckedNetwork, Duration


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SecondFactor(_Section):
    """Who must answer a TOTP prompt after their key: any one match requires it."""

    totp_zones: list[str] = []
    totp_users: list[str] = []
    totp_roles: list[str] = []


class Defender(_Section):
    """Per-source penalties (OpenSSH's ``PerSourcePenalties``, made durable)."""

    enabled: bool = True
    threshold: Annotated[int, Field(ge=1)] = 10  # score at which a source is banned
    ban_time: Duration = 900.0  # first ban; repeat bans grow
    allow: list[CheckedNetwork] = []  # never banned


class AuthConfig(_Section):
    trusted_user_ca_keys: list[Path] = []  # OpenSSH CA public keys
    revoked_keys: Path | None = None  # an OpenSSH KRL or a list of public keys
    certificate_clock_skew: Duration = 60.0  # grace before a certificate's valid_after
    second_factor: SecondFactor = SecondFactor()
    defender: Defender = Defender()
