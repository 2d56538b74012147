"""Provisional decision engine: grants only (zones and conduits come with the policy issue)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address, ip_address

from conduit.config.model import Config, Obligation, Op

IPAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class Request:
    """One question: may ``user`` from ``source`` do ``op`` on virtual ``path``?"""

    user: str
    source: IPAddress
    op: Op
    path: str
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: str
    reason: str
    detail: str
    obligations: frozenset[Obligation] = field(default_factory=frozenset)
    max_size: int | None = None


class Policy:
    def __init__(self, config: Config, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.clock = clock or (lambda: datetime.now(UTC))

    def zone_of(self, address: IPAddress | str) -> str | None:
        address = ip_address(address) if isinstance(address, str) else address
        for name, zone in self.config.zones.items():
            if any(address in net for net in zone.networks if net.version == address.version):
                return name
        return None

    def roots(self, user: str, source: IPAddress) -> list[str]:
        """Top-level names the user may see when listing ``/``."""
        names = [
            a
            for a in self.config.areas
            if self.decide(Request(user, source, Op.LIST, f"/{a}")).allowed
        ]
        return sorted(names)

    def decide(self, request: Request) -> Decision:
        user = self.config.users.get(request.user)
        if user is None:
            return _deny("no-user", "unknown user", f"user {request.user!r} is not in the policy")
        zone = self.zone_of(request.source)
        if zone is None:
            return _deny("no-zone", "source address in no zone", f"{request.source} is in no zone")
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            if request.op is Op.LIST:
                return Decision(True, "root", "allowed", "listing the virtual root")
            return _deny("root", "read-only virtual root", f"{request.op} on / is never allowed")
        target, rel = parts[0], "/".join(parts[1:])
        area = self.config.areas.get(target)
        if area is None:
            return _deny("no-target", "no such area", f"{target!r} is not an area")
        if area.zone != zone:
            return _deny("no-conduit", "no conduit between zones", f"{zone} -> {area.zone}")
        for role_name in user.roles:
            role = self.config.roles.get(role_name)
            if role is None:
                continue
            for index, grant in enumerate(role.grants):
                if grant.target != target or request.op not in grant.ops:
                    continue
                if (
                    grant.paths
                    and rel
                    and not any(fnmatch.fnmatchcase(rel, p) for p in grant.paths)
                ):
                    continue
                rule = f"roles.{role_name}.grants[{index}]"
                return Decision(True, rule, "allowed", f"{rule} allows {request.op} on {target}")
        return _deny(
            "no-grant", f"{request.op} not granted", f"no grant of {request.op} on {request.path}"
        )


def _deny(rule: str, reason: str, detail: str) -> Decision:
    return Decision(False, rule, reason, detail)
