"""Building a policy's indexes from its config, once, so ``decide`` stays cheap.

Pure: the config in, plain tables out. :class:`conduit.policy.engine.Policy`
builds these when it is created (and on every reload).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv6Address, ip_address

from conduit.config.model import Config, Grant, Op
from conduit.names import DEVICES
from conduit.policy.conduits import CompiledConduit
from conduit.policy.decision import IPAddress
from conduit.policy.patterns import PathPattern
from conduit.policy.windows import WindowError, parse_windows

#: Per IP version: (prefix length, mask, network number -> zone), longest first.
ZoneTable = dict[int, list[tuple[int, int, dict[int, str]]]]


class PolicyError(ValueError):
    """A config the engine cannot run (bad window, unknown time zone)."""


@dataclass(frozen=True, slots=True)
class CompiledGrant:
    rule: str
    ops: frozenset[Op]
    patterns: tuple[PathPattern, ...]
    config: Grant


def zone_table(config: Config) -> ZoneTable:
    """Zone lookup: per IP version, prefix lengths longest first, each a dict
    from network number to zone name."""
    nets: ZoneTable = {4: [], 6: []}
    by_len: dict[tuple[int, int], dict[int, str]] = {}
    for name, zone in config.zones.items():
        for net in zone.networks:
            by_len.setdefault((net.version, net.prefixlen), {}).setdefault(
                int(net.network_address), name
            )
    for (version, length), table in sorted(by_len.items(), key=lambda kv: -kv[0][1]):
        bits = 32 if version == 4 else 128
        mask = ((1 << length) - 1) << (bits - length) if length else 0
        nets[version].append((length, mask, table))
    return nets


AreaGrants = dict[str, dict[str, list[CompiledGrant]]]
DeviceGrants = dict[str, list[tuple[PathPattern, CompiledGrant]]]


def user_grants(config: Config) -> tuple[AreaGrants, DeviceGrants]:
    """Per user: area name -> grants, and (device glob, grant) pairs; roles in the
    user's order, grants in file order (the first match decides)."""
    area_grants: AreaGrants = {}
    device_grants: DeviceGrants = {}
    for user_name, user in config.users.items():
        areas: dict[str, list[CompiledGrant]] = {}
        devices: list[tuple[PathPattern, CompiledGrant]] = []
        for role_name in user.roles:
            role = config.roles.get(role_name)
            if role is None:
                continue
            for index, grant in enumerate(role.grants):
                compiled = CompiledGrant(
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
        area_grants[user_name] = areas
        device_grants[user_name] = devices
    return area_grants, device_grants


def conduit_table(config: Config) -> dict[tuple[str, str], list[CompiledConduit]]:
    """Conduits per (from zone, to zone), in file order; a bad window raises."""
    table: dict[tuple[str, str], list[CompiledConduit]] = {}
    for conduit in config.conduits:
        try:
            windows = parse_windows(conduit.window)
        except WindowError as exc:
            raise PolicyError(f"conduits[{conduit.name}].window: {exc}") from None
        table.setdefault((conduit.from_zone, conduit.to_zone), []).append(
            CompiledConduit(
                f"conduits[{conduit.name}]",
                conduit,
                tuple(PathPattern.compile(p) for p in conduit.paths),
                windows,
                int(conduit.max_size) if conduit.max_size is not None else None,
                conduit.obligations,
            )
        )
    return table


@dataclass(slots=True)
class Target:
    kind: str  # "area" | "device"
    name: str
    zone: str
    parts: tuple[str, ...]  # relative to the target


def plain(address: IPAddress | str) -> IPAddress:
    """``address`` as an address; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``,
    as dual-stack sockets report IPv4 peers) as the IPv4 address it is."""
    if isinstance(address, str):
        address = ip_address(address)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=1024)
def shown(address: IPAddress) -> str:
    """``str(address)``, kept: every decision's text names the client's address,
    and formatting one cost more than the rest of the sentence (~3 µs of a
    ~25 µs decision); a session asks with the same address every time."""
    return str(address)


class Index:
    """A policy's compiled tables and the lookups over them (no decisions)."""

    def __init__(self, config: Config) -> None:
        self._zone_nets = zone_table(config)
        self._areas = {name: area.zone for name, area in config.areas.items()}
        self._devices = {name: device.zone for name, device in config.devices.items()}
        # Per user: area name -> grants, plus (device glob, grant) pairs.
        self._area_grants, self._device_grants = user_grants(config)
        self._device_cache: dict[tuple[str, str], list[CompiledGrant]] = {}
        self._listable_cache: dict[str, tuple[str, ...]] = {}
        self._user_networks = {
            name: tuple(user.networks) for name, user in config.users.items() if user.networks
        }
        self._conduits: dict[tuple[str, str], list[CompiledConduit]] = conduit_table(config)

    def zone_of(self, address: IPAddress | str) -> str | None:
        """The zone whose networks hold ``address`` (longest prefix), or None."""
        address = plain(address)
        number = int(address)
        for _length, mask, table in self._zone_nets[address.version]:
            zone = table.get(number & mask)
            if zone is not None:
                return zone
        return None

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

    def _grants_on(self, user: str, target: Target) -> list[CompiledGrant]:
        if target.kind == "area":
            return self._area_grants[user].get(target.name, [])
        return self._grants_for_device(user, target.name)

    def _sees(self, grants: list[CompiledGrant], client_zone: str, target_zone: str) -> bool:
        """May a user with ``grants`` on a target know it exists? Only if some
        grant names it and data could flow at all (same zone, or a conduit
        either way): otherwise nothing they could do there would ever work."""
        return bool(grants) and (
            client_zone == target_zone
            or (client_zone, target_zone) in self._conduits
            or (target_zone, client_zone) in self._conduits
        )

    def _target(self, parts: tuple[str, ...]) -> Target | None:
        if parts[0] == DEVICES:
            zone = self._devices.get(parts[1])
            return None if zone is None else Target("device", parts[1], zone, parts[2:])
        zone = self._areas.get(parts[0])
        return None if zone is None else Target("area", parts[0], zone, parts[1:])

    def _grants_for_device(self, user: str, device: str) -> list[CompiledGrant]:
        key = (user, device)
        grants = self._device_cache.get(key)
        if grants is None:
            grants = [g for glob, g in self._device_grants[user] if glob.matches(device, device)]
            self._device_cache[key] = grants
        return grants
