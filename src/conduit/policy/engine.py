"""``decide()``: may this principal, from this address, do this operation on this path, now?

Two questions, both must say yes (deny by default):

1. **Grant** — one of the user's roles grants the operation on the target
   (an area name, or ``devices/<glob>``), and the path below the target
   matches the grant's patterns, if it has any.
2. **Flow** — the client's zone (from its address) and the target's zone are
   the same, or a conduit allows data to flow between them for this file, now:
   ``write``/``mkdir``/``rename``/``delete`` flow client → target, ``read`` and
   ``list`` flow target → client. The conduit's patterns, time window and size
   limit apply; its obligations travel with the decision.

Pure: no I/O, the clock is injected. Everything that can be precomputed from
the config is, in ``__init__``, so one decision costs a few dict lookups.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from zoneinfo import ZoneInfo

from conduit.config.model import Config, Obligation, Op
from conduit.policy.patterns import Pattern, any_match, compile_pattern
from conduit.policy.windows import Window, parse_windows

IPAddress = IPv4Address | IPv6Address
DEVICES = "devices"
# Operations that change the target's zone: data flows client -> target.
INBOUND = frozenset({Op.WRITE, Op.MKDIR, Op.RENAME, Op.DELETE})


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
    """The answer. ``reason`` is short, for the client; ``detail`` is for the audit."""

    allowed: bool
    rule: str
    reason: str
    detail: str
    obligations: frozenset[Obligation] = field(default_factory=frozenset)
    max_size: int | None = None
    grant: str | None = None
    conduit: str | None = None
    client_zone: str | None = None
    target_zone: str | None = None


@dataclass(frozen=True, slots=True)
class _Grant:
    rule: str
    target: str  # area name, or a glob over "devices/NAME"
    is_glob: bool
    ops: frozenset[Op]
    patterns: tuple[Pattern, ...]

    def covers(self, target: str, op: Op, rel: str) -> bool:
        if op not in self.ops:
            return False
        if self.is_glob:
            if not fnmatch.fnmatchcase(target, self.target):
                return False
        elif target != self.target:
            return False
        return any_match(self.patterns, rel)


@dataclass(frozen=True, slots=True)
class _Conduit:
    name: str
    patterns: tuple[Pattern, ...]
    windows: tuple[Window, ...]
    max_size: int | None
    require: frozenset[Obligation]


@dataclass(frozen=True, slots=True)
class _Target:
    key: str  # "firmware" or "devices/plc-01"
    zone: str
    rel: str  # path below the target, "" for the target itself


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Policy:
    """A loaded policy. ``decide`` is the only question the gateway asks."""

    def __init__(self, config: Config, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.config = config
        self.clock = clock or _utc_now
        self.timezone = ZoneInfo(config.gateway.timezone)
        # Most specific network first, so a /32 inside a /16 names its own zone.
        self._networks = sorted(
            ((net, name) for name, zone in config.zones.items() for net in zone.networks),
            key=lambda item: (-item[0].prefixlen, item[0].version),
        )
        self._grants: dict[str, tuple[_Grant, ...]] = {}
        for user_name, user in config.users.items():
            grants = []
            for role_name in user.roles:
                role = config.roles.get(role_name)
                for index, grant in enumerate(role.grants if role else ()):
                    target = grant.target.strip("/")
                    grants.append(
                        _Grant(
                            rule=f"roles.{role_name}.grants[{index}]",
                            target=target,
                            is_glob=target.startswith(f"{DEVICES}/"),
                            ops=frozenset(grant.ops),
                            patterns=tuple(compile_pattern(p) for p in grant.paths),
                        )
                    )
            self._grants[user_name] = tuple(grants)
        self._conduits: dict[tuple[str, str], list[_Conduit]] = defaultdict(list)
        for conduit in config.conduits:
            self._conduits[(conduit.from_zone, conduit.to_zone)].append(
                _Conduit(
                    name=conduit.name,
                    patterns=tuple(compile_pattern(p) for p in conduit.paths),
                    windows=parse_windows(conduit.window),
                    max_size=int(conduit.max_size) if conduit.max_size is not None else None,
                    require=frozenset(conduit.require),
                )
            )

    # -- lookups -----------------------------------------------------------------------

    def zone_of(self, address: IPAddress | str) -> str | None:
        """The zone whose networks hold ``address`` (most specific first), or None."""
        address = ip_address(address) if isinstance(address, str) else address
        for network, name in self._networks:
            if network.version == address.version and address in network:
                return name
        return None

    def roots(self, user: str, source: IPAddress) -> list[str]:
        """Top-level names ``user`` may see when listing ``/``."""
        names = [a for a in self.config.areas if self._lists(user, source, f"/{a}")]
        if self.visible_devices(user, source):
            names.append(DEVICES)
        return sorted(names)

    def visible_devices(self, user: str, source: IPAddress) -> list[str]:
        return sorted(
            d for d in self.config.devices if self._lists(user, source, f"/{DEVICES}/{d}")
        )

    def _lists(self, user: str, source: IPAddress, path: str) -> bool:
        return self.decide(Request(user, source, Op.LIST, path)).allowed

    # -- the decision ------------------------------------------------------------------------

    def decide(self, request: Request) -> Decision:
        user = self.config.users.get(request.user)
        if user is None:
            return _deny("users", "unknown user", f"user {request.user!r} is not in the policy")
        zone = self.zone_of(request.source)
        if zone is None:
            return _deny(
                "zones",
                "source address is in no zone",
                f"{request.source} is in no zone's networks",
            )
        if user.networks and not any(
            n.version == request.source.version and request.source in n for n in user.networks
        ):
            return _deny(
                f"users.{request.user}.networks",
                "source address not allowed",
                f"{request.source} is outside the networks of user {request.user}",
                client_zone=zone,
            )
        parts = [p for p in request.path.split("/") if p]
        if not parts or parts == [DEVICES]:
            if request.op is Op.LIST:
                where = "/" if not parts else f"/{DEVICES}"
                return Decision(True, "root", "allowed", f"listing {where}", client_zone=zone)
            return _deny(
                "root",
                "read-only folder",
                f"{request.op} on {request.path} is never allowed",
                client_zone=zone,
            )
        target = self._target(parts)
        if target is None:
            return _deny(
                "targets",
                "no such area or device",
                f"{request.path} is in no area or device",
                client_zone=zone,
            )
        grant = next(
            (
                g
                for g in self._grants.get(request.user, ())
                if g.covers(target.key, request.op, target.rel)
            ),
            None,
        )
        if grant is None:
            return _deny(
                "grants",
                f"{request.op} not granted",
                f"no grant of {request.op} on {request.path} for {request.user}",
                client_zone=zone,
                target_zone=target.zone,
            )
        if zone == target.zone:
            return Decision(
                True,
                grant.rule,
                "allowed",
                f"{grant.rule} allows {request.op} on {target.key} within zone {zone}",
                grant=grant.rule,
                client_zone=zone,
                target_zone=target.zone,
            )
        return self._through_conduit(request, grant, zone, target)

    def _target(self, parts: list[str]) -> _Target | None:
        if parts[0] == DEVICES:
            device = self.config.devices.get(parts[1])
            if device is None:
                return None
            return _Target(f"{DEVICES}/{parts[1]}", device.zone, "/".join(parts[2:]))
        area = self.config.areas.get(parts[0])
        if area is None:
            return None
        return _Target(parts[0], area.zone, "/".join(parts[1:]))

    def _through_conduit(
        self, request: Request, grant: _Grant, zone: str, target: _Target
    ) -> Decision:
        source, dest = (zone, target.zone) if request.op in INBOUND else (target.zone, zone)
        flow = f"{source} -> {dest}"
        context = {"grant": grant.rule, "client_zone": zone, "target_zone": target.zone}
        candidates = self._conduits.get((source, dest), [])
        if not candidates:
            return _deny(
                "conduits",
                "no conduit between these zones",
                f"no conduit allows {flow} ({request.op} {request.path})",
                **context,
            )
        matching = [c for c in candidates if any_match(c.patterns, target.rel)]
        if not matching:
            names = ", ".join(c.name for c in candidates)
            return _deny(
                "conduits",
                "no conduit for this file",
                f"{request.path} matches no path pattern of {names} ({flow})",
                **context,
            )
        now = self.clock().astimezone(self.timezone)
        open_now = [c for c in matching if not c.windows or any(w.contains(now) for w in c.windows)]
        if not open_now:
            shown = "; ".join(f"{c.name}: {', '.join(w.text for w in c.windows)}" for c in matching)
            return _deny(
                f"conduits[{matching[0].name}]",
                "outside the conduit's time window",
                f"{flow} is closed at {now:%a %H:%M %Z} ({shown})",
                **context,
            )
        size = request.size
        fits = [c for c in open_now if size is None or c.max_size is None or size <= c.max_size]
        if not fits:
            c = open_now[0]
            return _deny(
                f"conduits[{c.name}]",
                "file exceeds the conduit's size limit",
                f"{size} bytes exceeds max_size {c.max_size} of conduit {c.name}",
                **context,
            )
        chosen = fits[0]
        rule = f"{grant.rule} + conduits[{chosen.name}]"
        return Decision(
            True,
            rule,
            "allowed",
            f"{grant.rule} allows {request.op}; conduit {chosen.name} allows {flow}",
            obligations=chosen.require,
            max_size=chosen.max_size,
            grant=grant.rule,
            conduit=chosen.name,
            client_zone=zone,
            target_zone=target.zone,
        )


def _deny(rule: str, reason: str, detail: str, **context: str | None) -> Decision:
    return Decision(False, rule, reason, detail, **context)  # type: ignore[arg-type]
