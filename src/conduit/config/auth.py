"""``[auth]``: how people prove who they are, beyond the keys under each user.

Certificates from a trusted user CA, a revocation list, a second factor
(TOTP over keyboard-interactive) by zone, role or user, and the defender that
throttles sources hammering the gateway. Every part is off until the file
asks for it: a policy without ``[auth]`` behaves as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conduit.config.types import CheckedNetwork, Duration


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SecondFactor(_Section):
    """Who must answer a TOTP prompt after their key: any one match requires it."""

    totp_zones: list[str] = []
    totp_users: list[str] = []
    totp_roles: list[str] = []


class Defender(_Section):
    """Per-source penalties (OpenSSH's ``PerSourcePenalties``, made durable).

    Active only when the policy file has an ``[auth.defender]`` section (see
    :func:`conduit.auth.defender.active`); ``enabled = false`` turns a present
    section off. Weights are points per connection that ends unauthenticated.
    """

    enabled: bool = True
    threshold: Annotated[int, Field(ge=1)] = 10  # score at which a source is banned
    ban_time: Annotated[Duration, Field(gt=0)] = 900.0  # first ban; repeat bans grow
    allow: list[CheckedNetwork] = []  # never banned
    max_ban_time: Duration = 86400.0  # repeat bans grow up to this
    ban_growth: Annotated[float, Field(ge=1.0, le=16.0)] = 2.0  # each repeat ban x this
    half_life: Annotated[Duration, Field(gt=0)] = 600.0  # a score halves in this time
    forget_after: Duration = 86400.0  # ban history dropped this long after the last ban ended
    max_sources: Annotated[int, Field(ge=16)] = 65536  # sources tracked in memory
    auth_failed: Annotated[float, Field(ge=0)] = 1.0  # closed after failed auth attempts
    no_auth: Annotated[float, Field(ge=0)] = 0.5  # closed before any auth attempt
    grace_expired: Annotated[float, Field(ge=0)] = 2.0  # held a slot for login_grace_time
    protocol_error: Annotated[float, Field(ge=0)] = 2.0  # broke the SSH protocol before auth
    startups_exceeded: Annotated[float, Field(ge=0)] = 0.5  # refused: max_startups_per_source

    @model_validator(mode="after")
    def _longest_ban(self) -> Defender:
        if self.max_ban_time < self.ban_time:
            raise ValueError("max_ban_time must be at least ban_time")
        return self


class AuthConfig(_Section):
    trusted_user_ca_keys: list[Path] = []  # OpenSSH CA public keys
    revoked_keys: Path | None = None  # an OpenSSH KRL or a list of public keys
    certificate_clock_skew: Duration = 60.0  # grace before a certificate's valid_after
    second_factor: SecondFactor = SecondFactor()
    defender: Defender = Defender()
