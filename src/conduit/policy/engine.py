"""The decision engine: ``Policy.decide(Request) -> Decision``.

Semantics (the contract the gateway, ``check`` and ``explain`` share):

- **Deny by default.** Evaluation stops at the first failing step, in order:
  the path (no NUL), the user, the client's zone, the user's own ``networks``,
  the target, the grant, the conduit.
- **Client zone**: the zone whose networks hold the source address (longest
  prefix wins; ``check`` rejects overlaps anyway). No zone: everything is
  denied, even listing ``/``. A user's ``networks``, if set, narrow further.
- **Paths** are normalised here again (``.``/``..``/``//`` resolved, clamped at
  ``/``), so a ``..`` can never reach more than the normalised path.
- **Targets**: ``/AREA/...`` and ``/devices/DEVICE/...``. ``/`` and
  ``/devices`` are virtual, read-only directories: only ``list`` is allowed on
  them (``/devices`` only when some device is visible). On the root of an area
  or device (``/firmware``) only ``list`` and ``read`` (a stat) are allowed.
  Unknown target: deny.
- **Grants** name an area or ``devices/<glob>`` (glob over device names). A
  grant's ``paths`` match the path relative to the target (see
  :mod:`conduit.policy.patterns`). For ``list`` and ``mkdir`` the path is a
  directory: allowed if some pattern could match it or something below it.
  For every other op the path itself must match. No ``paths``: everything.
  The first matching grant (roles in the user's order, grants in file order)
  decides.
- **Direction**: ``write``, ``mkdir``, ``rename`` and ``delete`` flow
  client-zone → target-zone; ``read`` and ``list`` flow target-zone →
  client-zone. Same zone: no conduit needed.
- **Conduits** for that (from, to) pair are tried in file order; the first
  whose ``paths`` match (against the virtual path without its leading ``/``,
  e.g. ``firmware/a.bin``, same glob rules; none: all), whose ``window`` is
  open now (gateway time zone) and whose ``max_size`` is not exceeded by a
  known size, allows. Its ``max_size`` is returned for the streaming check.
  If none allows, the candidate that got furthest explains the denial.
- **Obligations** (``require``) are returned for ``read``, ``write`` and
  ``rename`` (ops that deliver content under a name); ``list``, ``mkdir`` and
  ``delete`` move no content and carry none.
- ``Decision.rule`` names the item that decided: ``conduits[NAME]`` when a
  conduit allowed or refused, ``roles.ROLE.grants[I]`` for a same-zone
  allow, or ``deny:REASON`` when nothing in the file applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv6Address, ip_address
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conduit.config.model import Config, Grant, Op
from conduit.policy.conduits import CompiledConduit, Miss, first_open
from conduit.policy.decision import Decision, Explanation, IPAddress, Request, Step
from conduit.policy.patterns import PathPattern, normalise
from conduit.policy.windows import WindowError, parse_windows

#: Ops that change the target's zone (client → target); the rest read from it.
INBOUND_OPS = frozenset({Op.WRITE, Op.MKDIR, Op.RENAME, Op.DELETE})
#: Ops whose path is a directory: allowed where a pattern could match below.
DIRECTORY_OPS = frozenset({Op.LIST, Op.MKDIR})
#: Ops that deliver file content under a name, and so carry obligations.
CONTENT_OPS = frozenset({Op.READ, Op.WRITE, Op.RENAME})
DEVICES = "devices"


class PolicyError(ValueError):
    """A config the engine cannot run (bad window, unknown time zone)."""


@dataclass(frozen=True, slots=True)
class _Grant:
    rule: str
    ops: frozenset[Op]
    patterns: tuple[PathPattern, ...]
    config: Grant


@dataclass(slots=True)
class _Target:
    kind: str  # "area" | "device"
    name: str
    zone: str
    parts: tuple[str, ...]  # relative to the target


def _plain(address: IPAddress | str) -> IPAddress:
    """``address`` as an address; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``,
    as dual-stack sockets report IPv4 peers) as the IPv4 address it is."""
    if isinstance(address, str):
        address = ip_address(address)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _deny(
    rule: str,
    reason: str,
    detail: str,
    *,
    grant: str | None = None,
    client_zone: str | None = None,
    target_zone: str | None = None,
) -> Decision:
    return Decision(
        False,
        rule,
        reason,
        detail,
        grant=grant,
        client_zone=client_zone,
        target_zone=target_zone,
    )


class Policy:
    """A compiled policy: indexes built once, ``decide`` cheap and pure."""

    def __init__(self, config: Config, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        try:
            self.timezone = ZoneInfo(config.gateway.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(
                f"gateway.timezone: unknown time zone {config.gateway.timezone!r}"
            ) from None
        # Zone lookup: per IP version, prefix lengths longest first, each a
        # dict from network number to zone name.
        self._zone_nets: dict[int, list[tuple[int, int, dict[int, str]]]] = {4: [], 6: []}
        by_len: dict[tuple[int, int], dict[int, str]] = {}
        for name, zone in config.zones.items():
            for net in zone.networks:
                by_len.setdefault((net.version, net.prefixlen), {}).setdefault(
                    int(net.network_address), name
                )
        for (version, length), table in sorted(by_len.items(), key=lambda kv: -kv[0][1]):
            bits = 32 if version == 4 else 128
            mask = ((1 << length) - 1) << (bits - length) if length else 0
            self._zone_nets[version].append((length, mask, table))
        self._areas = {name: area.zone for name, area in config.areas.items()}
        self._devices = {name: device.zone for name, device in config.devices.items()}
        # Per user: area name -> grants, plus (device glob, grant) pairs.
        self._area_grants: dict[str, dict[str, list[_Grant]]] = {}
        self._device_grants: dict[str, list[tuple[PathPattern, _Grant]]] = {}
        self._device_cache: dict[tuple[str, str], list[_Grant]] = {}
        self._listable_cache: dict[str, tuple[str, ...]] = {}
        for user_name, user in config.users.items():
            areas: dict[str, list[_Grant]] = {}
            devices: list[tuple[PathPattern, _Grant]] = []
            for role_name in user.roles:
                role = config.roles.get(role_name)
                if role is None:
                    continue
                for index, grant in enumerate(role.grants):
                    compiled = _Grant(
                        f"roles.{role_name}.grants[{index}]",
                        frozenset(grant.ops),
                        tuple(PathPattern.compile(p) for p in grant.paths),
                        grant,
                    )
                    kind, _, glob = grant.target.partition("/")
                    if kind == DEVICES and glob:
                        devices.append((PathPattern.compile(glob), compiled))
                    else:
                        areas.setdefault(grant.target, []).append(compiled)
            self._area_grants[user_name] = areas
            self._device_grants[user_name] = devices
        self._user_networks = {
            name: tuple(user.networks) for name, user in config.users.items() if user.networks
        }
        self._conduits: dict[tuple[str, str], list[CompiledConduit]] = {}
        for conduit in config.conduits:
            try:
                windows = parse_windows(conduit.window)
            except WindowError as exc:
                raise PolicyError(f"conduits[{conduit.name}].window: {exc}") from None
            self._conduits.setdefault((conduit.from_zone, conduit.to_zone), []).append(
                CompiledConduit(
                    f"conduits[{conduit.name}]",
                    conduit,
                    tuple(PathPattern.compile(p) for p in conduit.paths),
                    windows,
                    int(conduit.max_size) if conduit.max_size is not None else None,
                    frozenset(conduit.require),
                )
            )

    # -- lookups -------------------------------------------------------------

    def zone_of(self, address: IPAddress | str) -> str | None:
        """The zone whose networks hold ``address`` (longest prefix), or None."""
        address = _plain(address)
        number = int(address)
        for _length, mask, table in self._zone_nets[address.version]:
            zone = table.get(number & mask)
            if zone is not None:
                return zone
        return None

    def visible_devices(self, user: str, source: IPAddress) -> list[str]:
        """Device names ``user`` may list from ``source`` (entries of ``/devices``)."""
        return sorted(
            name
            for name in self._listable(user)
            if self.decide(Request(user, source, Op.LIST, f"/{DEVICES}/{name}")).allowed
        )

    def roots(self, user: str, source: IPAddress) -> list[str]:
        """Top-level names visible at ``/``: listable areas, and ``devices`` if any."""
        names = [
            name
            for name in self._areas
            if self.decide(Request(user, source, Op.LIST, f"/{name}")).allowed
        ]
        if self._any_device_visible(user, source):
            names.append(DEVICES)
        return sorted(names)

    def _any_device_visible(self, user: str, source: IPAddress) -> bool:
        return any(
            self.decide(Request(user, source, Op.LIST, f"/{DEVICES}/{name}")).allowed
            for name in self._listable(user)
        )

    def _listable(self, user: str) -> tuple[str, ...]:
        """Devices some grant of ``user`` lets them list (before zones and conduits)."""
        names = self._listable_cache.get(user)
        if names is None:
            names = tuple(
                name
                for name in self._devices
                if user in self._device_grants
                and any(Op.LIST in g.ops for g in self._grants_for_device(user, name))
            )
            self._listable_cache[user] = names
        return names

    def now(self) -> datetime:
        """The clock's time in the gateway's time zone."""
        return self.clock().astimezone(self.timezone)

    # -- decisions -----------------------------------------------------------

    def decide(self, request: Request) -> Decision:
        """Allow or deny ``request``; deny by default (see the module docstring)."""
        return self._evaluate(request, None)

    def explain(self, request: Request) -> Explanation:
        """Like :meth:`decide`, with every step that led to the answer."""
        steps: list[Step] = []
        decision = self._evaluate(request, steps)
        return Explanation(request, decision, tuple(steps), self.now())

    def _evaluate(self, request: Request, steps: list[Step] | None) -> Decision:
        def step(question: str, ok: bool, rule: str | None, text: str) -> None:
            if steps is not None:
                steps.append(Step(question, ok, rule, text))

        op, user = request.op, request.user
        if "\x00" in request.path:
            step("path", False, None, "the path contains a NUL byte")
            return _deny(
                "deny:bad-path",
                "invalid path",
                f"{user} {op} {request.path!r}: the path contains NUL",
            )
        parts = normalise(request.path)
        path = "/" + "/".join(parts)
        address = _plain(request.source)
        what = f"{user} {op} {path} from {address}"

        if user not in self._area_grants:
            step("user", False, None, f"{user!r} is not in [users]")
            return _deny("deny:unknown-user", "unknown user", f"{what}: user not in the policy")
        step("user", True, f"users.{user}", f"{user} is a user")
        client_zone = self.zone_of(address)
        if client_zone is None:
            step("zone", False, None, f"{address} is in no zone's networks")
            return _deny(
                "deny:no-zone",
                "source address in no zone",
                f"{what}: {address} is in no zone",
            )
        step("zone", True, f"zones.{client_zone}", f"{address} is in zone {client_zone}")
        networks = self._user_networks.get(user)
        if networks is not None and not any(
            address.version == net.version and address in net for net in networks
        ):
            rule = f"users.{user}.networks"
            step("user networks", False, rule, f"{address} is outside {rule}")
            return _deny(
                rule,
                "not allowed from this address",
                f"{what}: address outside {rule}",
                client_zone=client_zone,
            )

        # Virtual directories: "/" and "/devices".
        if not parts or (parts[0] == DEVICES and len(parts) == 1):
            if op is not Op.LIST:
                step("target", False, None, f"{path} is a read-only virtual directory")
                return _deny(
                    "deny:virtual",
                    "read-only directory",
                    f"{what}: {path} is a virtual directory; only list is allowed",
                    client_zone=client_zone,
                )
            if parts and not self._any_device_visible(user, address):
                step("grant", False, None, "no device is visible to this user from here")
                return _deny(
                    "deny:no-grant",
                    "list not granted",
                    f"{what}: no device is listable",
                    client_zone=client_zone,
                )
            step("target", True, None, f"{path} is a virtual directory; listing is allowed")
            return Decision(
                True, "virtual", "allowed", f"{what}: virtual directory", client_zone=client_zone
            )

        target = self._target(parts)
        if target is None:
            step("target", False, None, f"{path} names no area or device")
            return _deny(
                "deny:unknown-target",
                "no such area or device",
                f"{what}: no area or device {'/'.join(parts[:2])!r}",
                client_zone=client_zone,
            )
        target_zone = target.zone
        step(
            "target",
            True,
            f"{target.kind}s.{target.name}",
            f"{target.kind} {target.name} in zone {target.zone}",
        )
        if not target.parts and op not in (Op.LIST, Op.READ):
            step(
                "target", False, None, f"the root of {target.kind} {target.name} cannot be changed"
            )
            return _deny(
                "deny:target-root",
                f"{op} not allowed on {path}",
                f"{what}: {op} on the root of {target.kind} {target.name}",
                client_zone=client_zone,
                target_zone=target_zone,
            )

        # 1. Who may do what where.
        directory = op in DIRECTORY_OPS or not target.parts
        rel = "/".join(target.parts)
        last = target.parts[-1] if target.parts else ""
        grants = (
            self._area_grants[user].get(target.name, [])
            if target.kind == "area"
            else self._grants_for_device(user, target.name)
        )
        grant = None
        for candidate in grants:
            if op in candidate.ops and (
                not candidate.patterns
                or any(
                    p.could_contain(target.parts) if directory else p.matches(rel, last)
                    for p in candidate.patterns
                )
            ):
                grant = candidate
                break
        if grant is None:
            near = [g.rule for g in grants if op in g.ops]
            why = (
                f"{', '.join(near)} allow {op} but no paths pattern matches {rel!r}"
                if near
                else f"no role of {user} grants {op} on {target.kind} {target.name}"
            )
            step("grant", False, near[0] if near else None, why)
            return _deny(
                "deny:no-grant",
                f"{op} not granted",
                f"{what}: {why}",
                client_zone=client_zone,
                target_zone=target_zone,
            )
        step("grant", True, grant.rule, f"{grant.rule} grants {op} on {grant.config.target}")

        # 2. May data flow between these zones?
        if client_zone == target.zone:
            step("flow", True, None, f"same zone {client_zone}: no conduit needed")
            return Decision(
                True,
                grant.rule,
                "allowed",
                f"{what}: {grant.rule}, same zone {client_zone}",
                grant=grant.rule,
                client_zone=client_zone,
                target_zone=target_zone,
            )
        source, dest = (
            (client_zone, target.zone) if op in INBOUND_OPS else (target.zone, client_zone)
        )
        flow = f"{source} -> {dest}"
        conduits = self._conduits.get((source, dest))
        if not conduits:
            step("conduit", False, None, f"no conduit from {source} to {dest}")
            return _deny(
                "deny:no-conduit",
                f"no conduit {flow}",
                f"{what}: {grant.rule} grants it but no conduit allows {flow}",
                grant=grant.rule,
                client_zone=client_zone,
                target_zone=target_zone,
            )
        vrel = "/".join(parts)
        chosen = first_open(
            conduits, parts, directory, request.size, self.now, self.config.gateway.timezone, flow
        )
        if isinstance(chosen, Miss):
            step("conduit", False, chosen.conduit.rule, chosen.why)
            return _deny(
                chosen.conduit.rule,
                chosen.reason,
                f"{what}: {chosen.why}",
                grant=grant.rule,
                client_zone=client_zone,
                target_zone=target_zone,
            )
        conduit = chosen
        content = op in CONTENT_OPS and not directory
        obligations = conduit.obligations if content else frozenset()
        limit = conduit.max_size if content else None
        step("conduit", True, conduit.rule, f"{conduit.rule} allows {flow} for {vrel!r}")
        return Decision(
            True,
            conduit.rule,
            "allowed",
            f"{what}: {grant.rule} via {conduit.rule} ({flow})",
            obligations,
            limit,
            grant=grant.rule,
            conduit=conduit.rule,
            client_zone=client_zone,
            target_zone=target_zone,
        )

    def _target(self, parts: tuple[str, ...]) -> _Target | None:
        if parts[0] == DEVICES:
            zone = self._devices.get(parts[1])
            return None if zone is None else _Target("device", parts[1], zone, parts[2:])
        zone = self._areas.get(parts[0])
        return None if zone is None else _Target("area", parts[0], zone, parts[1:])

    def _grants_for_device(self, user: str, device: str) -> list[_Grant]:
        key = (user, device)
        grants = self._device_cache.get(key)
        if grants is None:
            grants = [g for glob, g in self._device_grants[user] if glob.matches(device, device)]
            self._device_cache[key] = grants
        return grants


__all__ = [
    "Decision",
    "Explanation",
    "Policy",
    "PolicyError",
    "Request",
    "Step",
]
