"""Cross-reference checks for ``conduit check`` and for reloads.

:func:`conduit.config.load` checks the shape of the file (types, unknown
keys); :func:`check` checks what needs the whole file at once: names that
refer to nothing, overlapping zone networks, patterns that can never match,
conduits inside one zone, users who cannot log in. Errors make the file
unusable; warnings are printed and the file is still used.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conduit.config.crypto import CryptoConfig, effective, weak_choices
from conduit.config.load import locate
from conduit.config.model import ConduitConfig, Config, Network, Obligation, Op
from conduit.inspect import filetype
from conduit.names import DEVICES, escape, name_problem
from conduit.policy.patterns import PathPattern, pattern_problem
from conduit.policy.windows import WindowError, parse_windows
from conduit.site.layout import layout_problems

RESERVED_NAMES = frozenset({DEVICES})


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding, pointing at a key (and its line when it can be found)."""

    severity: Literal["error", "warning"]
    key: str
    message: str
    line: int | None = None
    loc: tuple[str, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        prefix = f"line {self.line}: " if self.line else ""
        tag = "" if self.severity == "error" else "warning: "
        return f"{prefix}{tag}{self.key}: {self.message}"


def _key(loc: tuple[str, ...]) -> str:
    """``("roles", "x", "grants", "0", "target")`` -> ``roles.x.grants[0].target``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _bad_name(name: str) -> str | None:
    """The one name rule (conduit.names), plus no padding: these names are typed by people."""
    problem = name_problem(name)
    if problem:
        return f"'{escape(name)}' cannot be a name here: {problem}"
    if name != name.strip():
        return f"{name!r} has leading or trailing spaces"
    return None


def check(config: Config, text: str = "") -> list[Problem]:
    """Every cross-reference problem in ``config``; ``text`` locates lines."""
    problems: list[Problem] = []

    def add(severity: Literal["error", "warning"], loc: tuple[str, ...], message: str) -> None:
        line = locate(text, list(loc)) if text else None
        problems.append(Problem(severity, _key(loc), message, line, loc))

    def error(*loc: str, message: str) -> None:
        add("error", loc, message)

    def warning(*loc: str, message: str) -> None:
        add("warning", loc, message)

    # A misspelt name is one mistake however often it is used: one error at
    # its first use, naming the others, instead of one per reference.
    unknown: dict[tuple[str, str], tuple[tuple[str, ...], str, list[str]]] = {}

    def unknown_name(kind: str, name: str, loc: tuple[str, ...], message: str) -> None:
        if (kind, name) in unknown:
            unknown[(kind, name)][2].append(_key(loc))
        else:
            unknown[(kind, name)] = (loc, message, [])

    zones = config.zones
    zone_list = ", ".join(sorted(zones)) or "none defined"
    try:
        ZoneInfo(config.gateway.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        error("gateway", "timezone", message=f"unknown time zone {config.gateway.timezone!r}")

    # Zones: networks must not overlap (a client must have exactly one zone).
    seen: list[tuple[str, int, Network]] = []
    for name, zone in zones.items():
        if not zone.networks:
            warning("zones", name, message="no networks: no client can be in this zone")
        if not 0 <= zone.level <= 5:
            warning("zones", name, "level", message=f"Purdue level {zone.level} is outside 0-5")
        for index, net in enumerate(zone.networks):
            for other, other_index, other_net in seen:
                if net.version == other_net.version and net.overlaps(other_net):
                    where = f"zones.{other}.networks[{other_index}]"
                    error(
                        "zones",
                        name,
                        "networks",
                        str(index),
                        message=f"{net} overlaps {other_net} ({where})",
                    )
            seen.append((name, index, net))

    # Areas and devices: a known zone, a name usable as a path component.
    for section, items in (("areas", config.areas), ("devices", config.devices)):
        for name, item in items.items():
            bad = _bad_name(name)
            if bad:
                error(section, name, message=bad)
            if section == "areas" and name in RESERVED_NAMES:
                error(section, name, message=f"{name!r} is reserved for /{name}")
            if item.zone not in zones:
                unknown_name(
                    "zone",
                    item.zone,
                    (section, name, "zone"),
                    f"unknown zone {item.zone!r} (zones: {zone_list})",
                )

    # Roles: targets that exist, ops granted, patterns that can match.
    for role_name, role in config.roles.items():
        if not role.grants:
            warning("roles", role_name, message="grants nothing")
        for index, grant in enumerate(role.grants):
            loc = ("roles", role_name, "grants", str(index))
            kind, slash, glob = grant.target.partition("/")
            if kind == DEVICES and slash:
                if not glob or "/" in glob:
                    error(*loc, "target", message="use devices/<name or glob>, e.g. devices/plc-*")
                else:
                    compiled = PathPattern.compile(glob)
                    if not any(compiled.matches(d, d) for d in config.devices):
                        error(*loc, "target", message=f"{grant.target!r} matches no device")
            elif grant.target == DEVICES:
                error(*loc, "target", message="use devices/<name or glob>, e.g. devices/*")
            elif grant.target not in config.areas:
                areas = ", ".join(sorted(config.areas)) or "none defined"
                unknown_name(
                    "area",
                    grant.target,
                    (*loc, "target"),
                    f"unknown area {grant.target!r} (areas: {areas})",
                )
            if not grant.ops:
                error(*loc, "ops", message="grants no operation")
            for p_index, pattern in enumerate(grant.paths):
                why = pattern_problem(pattern)
                if why:
                    error(*loc, "paths", str(p_index), message=f"{pattern!r}: {why}")

    # Users: roles that exist, a key (or a certificate) to log in with, networks inside a zone.
    used_roles: set[str] = set()
    for user_name, user in config.users.items():
        bad = _bad_name(user_name)
        if bad:
            error("users", user_name, message=bad)
        if not (user.keys or user.authorized_keys or config.auth.trusted_user_ca_keys):
            error("users", user_name, "keys", message="no key: this user can never log in")
        if not user.roles:
            warning("users", user_name, "roles", message="no roles: this user may do nothing")
        for role_ref in user.roles:
            used_roles.add(role_ref)
            if role_ref not in config.roles:
                roles = ", ".join(sorted(config.roles)) or "none defined"
                unknown_name(
                    "role",
                    role_ref,
                    ("users", user_name, "roles"),
                    f"unknown role {role_ref!r} (roles: {roles})",
                )
        for net in user.networks:
            if not any(
                net.version == z.version and net.overlaps(z)
                for zone in zones.values()
                for z in zone.networks
            ):
                warning(
                    "users",
                    user_name,
                    "networks",
                    message=f"{net} is in no zone: this user is denied everything from there",
                )
    # The second factor: a misspelt name would silently ask nobody for a code.
    second = config.auth.second_factor
    for kind, refs, known in (
        ("zone", second.totp_zones, set(zones)),
        ("role", second.totp_roles, set(config.roles)),
        ("user", second.totp_users, set(config.users)),
    ):
        for index, ref in enumerate(refs):
            if ref not in known:
                error(
                    "auth",
                    "second_factor",
                    f"totp_{kind}s",
                    str(index),
                    message=f"unknown {kind} {ref!r}: TOTP would be asked of nobody by it",
                )
    missing_roles = [name for kind, name in unknown if kind == "role"]
    for unused in sorted(set(config.roles) - used_roles):
        # A role only a misspelt reference was meant for: the error says it.
        if not difflib.get_close_matches(unused, missing_roles, n=1, cutoff=0.6):
            warning("roles", unused, message="no user has this role")

    # Conduits: distinct names, two different known zones, sane limits.
    # (Areas and devices in an unknown zone are reported above; a conduit
    # path naming them is not a second mistake.)
    broken = {name for name, area in config.areas.items() if area.zone not in zones}
    broken |= {name for kind, name in unknown if kind == "area"}  # granted, never defined
    if any(device.zone not in zones for device in config.devices.values()):
        broken.add("devices")
    names: set[str] = set()
    for index, conduit in enumerate(config.conduits):
        cloc = ("conduits", str(index))
        if conduit.name in names:
            error(*cloc, "name", message=f"duplicate conduit name {conduit.name!r}")
        names.add(conduit.name)
        for key, zone_name in (("from", conduit.from_zone), ("to", conduit.to_zone)):
            if zone_name not in zones:
                unknown_name(
                    "zone",
                    zone_name,
                    (*cloc, key),
                    f"unknown zone {zone_name!r} (zones: {zone_list})",
                )
        if conduit.from_zone == conduit.to_zone:
            error(
                *cloc,
                "to",
                message=f"from and to are both {conduit.from_zone!r}: a zone needs no conduit",
            )
        try:
            parse_windows(conduit.window)
        except WindowError as exc:
            error(*cloc, "window", message=str(exc))
        if conduit.window == []:
            warning(*cloc, "window", message="empty list: the conduit is always open")
        reachable = {
            name
            for name, area in config.areas.items()
            if area.zone in (conduit.from_zone, conduit.to_zone)
        }
        if any(d.zone in (conduit.from_zone, conduit.to_zone) for d in config.devices.values()):
            reachable.add(DEVICES)
        for p_index, pattern in enumerate(conduit.paths):
            why = pattern_problem(pattern)
            first = pattern.split("/", 1)[0]
            literal = not any(c in first for c in "*?[")
            if why is None and "/" in pattern and literal and first not in reachable:
                if first in broken or {conduit.from_zone, conduit.to_zone} - set(zones):
                    continue  # follows from an unknown zone, already reported
                why = (
                    "never matches: conduit paths are virtual paths (AREA/... or devices/...)"
                    f" and {first!r} is no area or devices in {conduit.from_zone}"
                    f" or {conduit.to_zone}"
                )
            if why:
                error(*cloc, "paths", str(p_index), message=f"{pattern!r}: {why}")
    _inspection(config, error, warning)
    for index, conduit in enumerate(config.conduits):
        if Obligation.APPROVAL in conduit.require and not _approvers(config, conduit):
            warning(
                "conduits",
                str(index),
                "require",
                message="requires approval, but no role grants approve on an area or device"
                f" of {conduit.from_zone} or {conduit.to_zone}: its files would wait until"
                " they expire",
            )
    for first_use, message, others in unknown.values():
        also = f"; also used at {', '.join(others)}" if others else ""
        error(*first_use, message=message + also)
    for severity, place, message in layout_problems(config):
        add(severity, place, message)
    crypto_places: list[tuple[tuple[str, ...], CryptoConfig]] = [
        (("gateway", "crypto"), config.gateway.crypto),
        *((("devices", n, "crypto"), d.crypto) for n, d in config.devices.items()),
    ]
    for at, crypto in crypto_places:
        offered = effective(crypto)
        for kind, listed in offered.items():
            if not listed:
                error(*at, kind, message="no algorithm left: nothing could connect")
        for kind, alg, weak in weak_choices(offered):
            warning(*at, kind, message=f"{alg} is weak ({weak})")
    return problems


def _inspection(config: Config, error: Callable[..., None], warning: Callable[..., None]) -> None:
    """Obligations that can be met: trust sets that exist and vouch, a scanner to scan.

    A scan nothing can do is a warning, not an error: the gateway refuses
    every such transfer (fail closed), which is safe; so is ``require =
    ["signature"]`` without ``trust`` (``conduit explain`` shows that no
    trust set can vouch). ``require = ["type"]`` without ``types`` is an
    error: ``type`` is implied by ``types`` and means nothing alone.
    """
    trusts = config.inspect.trust
    for name, trust in trusts.items():
        if not (trust.ssh_allowed_signers or trust.openpgp_keys or trust.sha256_lists):
            error(
                "inspect",
                "trust",
                name,
                message="no ssh_allowed_signers, openpgp_keys or sha256_lists: vouches for nothing",
            )
    for index, conduit in enumerate(config.conduits):
        cloc = ("conduits", str(index))
        for ref in conduit.trust:
            if ref not in trusts:
                known = ", ".join(sorted(trusts)) or "none defined"
                error(*cloc, "trust", message=f"unknown trust {ref!r} (inspect.trust: {known})")
        if Obligation.TYPE in conduit.require and not conduit.types:
            error(*cloc, "require", message='"type" without types: no type would ever pass')
        if Obligation.SIGNATURE in conduit.require and not conduit.trust:
            warning(
                *cloc,
                "require",
                message='"signature" without trust: no signature can vouch, every file is refused',
            )
        if Obligation.SCAN in conduit.require and not config.inspect.scan.clamd:
            warning(
                *cloc,
                "require",
                message='"scan" without [inspect.scan] clamd: every file through it is refused',
            )
        if conduit.types and (missing := filetype.unavailable()):
            error(*cloc, "types", message=f"{missing}: every file through it would be refused")
        for t_index, mime in enumerate(conduit.types):
            major, slash, minor = mime.partition("/")
            if not (slash and major and minor and major != "*" and "/" not in minor):
                error(
                    *cloc,
                    "types",
                    str(t_index),
                    message=f"{mime!r} is not a MIME type like application/gzip or text/*",
                )


def _approvers(config: Config, conduit: ConduitConfig) -> bool:
    """Does some role grant ``approve`` on a target in one of the conduit's zones?"""
    zones = (conduit.from_zone, conduit.to_zone)
    targets = [n for n, a in config.areas.items() if a.zone in zones]
    targets += [f"{DEVICES}/{n}" for n, d in config.devices.items() if d.zone in zones]
    return any(
        fnmatchcase(target, grant.target)
        for role in config.roles.values()
        for grant in role.grants
        if Op.APPROVE in grant.ops
        for target in targets
    )


def coverage(config: Config) -> list[str]:
    """Sentences on which source addresses have a zone (``check`` prints them)."""
    nets = [(name, net) for name, zone in config.zones.items() for net in zone.networks]
    if not nets:
        return ["No zone has networks: every client is denied everything."]
    lines = [
        "A client's zone follows from its source address; an address in no zone is denied"
        " everything."
    ]
    for version in (4, 6):
        mine = [f"{net} ({name})" for name, net in nets if net.version == version]
        if not mine:
            lines.append(
                f"No zone covers any IPv{version} address: IPv{version} clients are denied."
            )
        elif any(net.prefixlen == 0 for _, net in nets if net.version == version):
            lines.append(f"Every IPv{version} address is in a zone.")
        else:
            lines.append(
                f"IPv{version} addresses with a zone: {', '.join(mine)}; all others: none."
            )
    return lines


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]
