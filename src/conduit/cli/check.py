"""``conduit check``: validate the policy file and show what it allows."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from conduit.config.crypto import effective
from conduit.config.model import Config
from conduit.inspect.clamd import parse_address, ping
from conduit.names import escape
from conduit.site.build import inspect
from conduit.site.check import coverage

DEFAULT_CONFIG = Path("conduit.toml")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate the policy, print zones/conduits/areas as tables",
        description="Validate the policy file; exit 1 with precise messages if it is unusable.",
    )
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help="policy file (default: ./conduit.toml)",
    )


def console() -> Console:
    """A console for stdout, created per call so redirection and capture work."""
    return Console(highlight=False, soft_wrap=True, width=120)


def load_or_report(path: Path, out: Console, *, files: bool = True) -> Config | None:
    """Check and build ``path`` as serve would; print every problem, None if unusable.

    ``files=False``: the policy alone (see :func:`conduit.site.build.inspect`).
    """
    report = inspect(path, files=files)
    for line in report.lines:
        out.print(f"{path}: {line}", markup=False)
    if report.site is None:
        count = len(report.errors)
        out.print(
            f"{path}: {count} error{'s' if count != 1 else ''}; the policy is not usable",
            markup=False,
        )
        return None
    return report.site.config


def run(args: argparse.Namespace) -> int:
    out = console()
    config = load_or_report(args.config, out)
    if config is None:
        return 1
    scanner = _scanner_problem(config)
    if scanner:
        out.print(f"{args.config}: warning: inspect.scan.clamd: {scanner}", markup=False)
    out.print(f"{args.config}: OK", markup=False)
    show(config, out)
    return 0


def _scanner_problem(config: Config) -> str | None:
    """Why the configured clamd does not answer (a warning: it may start later)."""
    if not config.inspect.scan.clamd:
        return None
    address = parse_address(config.inspect.scan.clamd)
    return asyncio.run(ping(address, min(config.inspect.scan.timeout, 5.0)))


def show(config: Config, out: Console) -> None:
    """Print the policy as tables and the zone-to-zone flow matrix."""
    zones = Table(title="Zones")
    for column in ("zone", "level", "networks", "description"):
        zones.add_column(column, overflow="fold")
    for name, zone in sorted(config.zones.items(), key=lambda kv: -kv[1].level):
        nets = ", ".join(str(n) for n in zone.networks) or "-"
        _row(zones, name, f"{zone.level:g}", nets, zone.description)
    out.print(zones)

    areas = Table(title="Areas")
    for column in ("path", "zone", "stored at"):
        areas.add_column(column, overflow="fold")
    for name, area in sorted(config.areas.items()):
        _row(areas, f"/{name}", area.zone, str(area.path))
    out.print(areas)

    if config.devices:
        devices = Table(title="Devices")
        for column in ("path", "zone", "address", "protocols", "root"):
            devices.add_column(column, overflow="fold")
        for name, device in sorted(config.devices.items()):
            _row(
                devices,
                f"/devices/{name}",
                device.zone,
                device.address,
                ", ".join(device.protocols),
                device.root,
            )
        out.print(devices)

    roles = Table(title="Roles")
    for column in ("role", "grant", "target", "ops", "paths"):
        roles.add_column(column, overflow="fold")
    for name, role in sorted(config.roles.items()):
        for index, grant in enumerate(role.grants):
            _row(
                roles,
                name,
                f"grants[{index}]",
                grant.target,
                ", ".join(grant.ops),
                ", ".join(grant.paths) or "(all)",
            )
    out.print(roles)

    users = Table(title="Users")
    for column in ("user", "roles", "keys", "from networks"):
        users.add_column(column, overflow="fold")
    for name, user in sorted(config.users.items()):
        _row(
            users,
            name,
            ", ".join(user.roles) or "-",
            _keys_cell(config, name),
            ", ".join(str(n) for n in user.networks) or "(any zone)",
        )
    out.print(users)

    conduits = Table(title="Conduits")
    for column in ("conduit", "from", "to", "paths", "max size", "window", "require"):
        conduits.add_column(column, overflow="fold")
    for conduit in config.conduits:
        window = conduit.window
        windows = ", ".join([window] if isinstance(window, str) else window or []) or "always"
        _row(
            conduits,
            conduit.name,
            conduit.from_zone,
            conduit.to_zone,
            ", ".join(conduit.paths) or "(all)",
            conduit.max_size.human_readable() if conduit.max_size is not None else "-",
            windows,
            ", ".join(conduit.require) or "-",
        )
    out.print(conduits)

    out.print(flow_matrix(config))
    for line in coverage(config):
        out.print(line, markup=False)
    for line in crypto_lines(config):
        out.print(line, markup=False)


def crypto_lines(config: Config) -> list[str]:
    """The SSH algorithms the gateway offers, and any device that differs."""
    site = effective(config.gateway.crypto)
    lines = ["SSH algorithms offered to clients (most preferred first):"]
    lines += [f"  {kind:<9} {', '.join(names)}" for kind, names in site.items()]
    for name, device in sorted(config.devices.items()):
        algs = effective(device.crypto)
        if algs != site:
            lines.append(f"SSH algorithms for device {name}:")
            lines += [f"  {kind:<9} {', '.join(names)}" for kind, names in algs.items()]
    return lines


def flow_matrix(config: Config) -> Table:
    """Rows: where data comes from; columns: where it goes. ``=``: same zone."""
    names = [n for n, _ in sorted(config.zones.items(), key=lambda kv: -kv[1].level)]
    table = Table(title="Flows (row: from zone, column: to zone)")
    table.add_column("from \\ to")
    for name in names:
        table.add_column(name, overflow="fold")
    for source in names:
        cells = []
        for dest in names:
            if source == dest:
                cells.append("=")
                continue
            found = [c.name for c in config.conduits if c.from_zone == source and c.to_zone == dest]
            cells.append(", ".join(found) or "-")
        _row(table, source, *cells)
    return table


def _row(table: Table, *values: str) -> None:
    """Add a row of plain text: names and globs like ``[ab]*`` are not markup."""
    table.add_row(*(Text(v) for v in values))


def _keys_cell(config: Config, name: str) -> str:
    """How a user logs in: the keys listed, a key file, certificates for which principals."""
    user = config.users[name]
    parts = [str(len(user.keys))]
    if user.authorized_keys is not None:
        parts.append("file")
    if config.auth.trusted_user_ca_keys:
        principals = user.principals if user.principals is not None else [name]
        parts.append("certs: " + ", ".join(escape(p) for p in principals))
    return " + ".join(parts)
