"""``conduit defender list|unban``: the sources the defender scored and banned.

Both read the policy only for its data folder and work whether or not a
gateway runs. ``list`` asks the running gateway (control socket, command
``defender-list``) for what it holds now -- bans in force and every score
still worth remembering, decayed to now -- and without one shows the table
in ``DATA_DIR/state.sqlite`` (bans, ban history, and the scores a clean
shutdown wrote; the gateway keeps scores below the threshold in memory).
``unban`` lifts a ban in the table and forgets the source's
history, then asks the running gateway over its control socket to apply it
and journal it (``defender.unban``); a gateway that cannot be asked applies it
the next time the source knocks, and one that is not running at its start.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from conduit.auth.bantable import Row, describe, request_unban, rows, when
from conduit.auth.defender import active, parse_source
from conduit.cli.check import add_config_argument, console, load_or_report
from conduit.cli.main import CommandError
from conduit.config import Config
from conduit.gateway.control import ask, socket_path
from conduit.names import escape
from conduit.state import STATE_FILE, StateDB

ASK_TIMEOUT = 10.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "defender",
        help="list the sources the defender banned, lift a ban",
        description="The defender ([auth.defender]) bans a source address (IPv6: its /64) "
        "that keeps failing to log in. List its table, or lift a ban.",
    )
    sub = parser.add_subparsers(dest="defender_command", metavar="ACTION", required=True)
    listing = sub.add_parser(
        "list",
        help="bans in force and remembered ban history",
        description="Every source in the defender's table: score, bans in a row, banned "
        "until (UTC) and what earned the last ban. Banned sources first.",
    )
    add_config_argument(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=run_list)
    unban = sub.add_parser(
        "unban",
        help="lift a source's ban (journalled)",
        description="Lift the ban of ADDR's source and forget its ban history. A running "
        "gateway applies it at once and journals it as defender.unban.",
    )
    add_config_argument(unban)
    unban.add_argument("address", metavar="ADDR", help="an IP address, or an IPv6 /64 as listed")
    unban.set_defaults(handler=run_unban)


def _config(path: Path) -> Config:
    err = Console(stderr=True, highlight=False, soft_wrap=True, width=120)
    config = load_or_report(path, err, files=False)
    if config is None:
        raise CommandError(f"{escape(str(path))}: the policy is not usable", code=1)
    if not active(config.auth):
        err.print(
            f"{escape(str(path))}: no [auth.defender] section (or enabled = false): "
            "the gateway bans nothing",
            markup=False,
        )
    return config


def _table_path(config: Config) -> Path:
    return Path(config.gateway.data_dir) / STATE_FILE


def _live(config: Config) -> list[Row] | None:
    """What the running gateway holds now; None without one that answers."""
    try:
        answer = ask(socket_path(Path(config.gateway.data_dir)), "defender-list", ASK_TIMEOUT)
    except (OSError, ValueError):
        return None
    if answer.get("ok") is not True or answer.get("active") is not True:
        return None
    try:
        return [Row(**item) for item in answer.get("sources") or []]
    except TypeError:  # a gateway of another version: fall back to the table
        return None


def run_list(args: argparse.Namespace) -> int:
    config = _config(args.config)
    path = _table_path(config)
    found = _live(config)
    where = "the running gateway"
    if found is None:
        found = rows(StateDB(path)) if path.exists() else []
        where = escape(str(path))
    now = time.time()
    if args.json:
        for row in found:
            print(json.dumps(_as_json(row, now), sort_keys=True))
        return 0
    out = console()
    if not found:
        out.print(f"no sources in the defender's table ({where})", markup=False)
        return 0
    table = Table(title=f"Defender ({where})")
    for column in ("source", "banned until", "score", "bans", "ban score", "reasons"):
        table.add_column(column, overflow="fold")
    for row in found:
        if row.unban_pending:
            until = "unbanned (gateway not told yet)"
        elif row.banned_until > now:
            until = when(row.banned_until)
        else:
            until = "-"
        cells = (
            row.source,
            until,
            f"{row.score:g}",
            str(row.bans),
            f"{row.ban_score:g}",
            describe(row.reasons),
        )
        table.add_row(*(Text(escape(c)) for c in cells))
    out.print(table)
    return 0


def _as_json(row: Row, now: float) -> dict[str, Any]:
    return {
        "source": row.source,
        "banned": row.banned_until > now and not row.unban_pending,
        "banned_until": when(row.banned_until) if row.banned_until else None,
        "bans": row.bans,
        "ban_score": row.ban_score,
        "score": row.score,
        "last_ban": when(row.last_ban) if row.last_ban else None,
        "reasons": row.reasons,
        "unban_pending": row.unban_pending,
    }


def run_unban(args: argparse.Namespace) -> int:
    try:
        source = parse_source(args.address)
    except ValueError as exc:
        raise CommandError(escape(str(exc))) from None
    config = _config(args.config)
    path = _table_path(config)
    if not path.exists():
        raise CommandError(f"{source} is not banned (no defender table at {path})", code=1)
    try:
        until = request_unban(StateDB(path), source, f"cli:{getpass.getuser()}")
    except LookupError:
        raise CommandError(f"{source} is not banned", code=1) from None
    out = console()
    out.print(f"{source}: ban until {when(until)} lifted", markup=False)
    control = socket_path(Path(config.gateway.data_dir))
    try:
        answer = ask(control, "defender", ASK_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError):
        out.print("no gateway runs: the next one to start journals the unban", markup=False)
        return 0
    except (OSError, ValueError) as exc:
        print(
            f"conduit: the gateway did not confirm ({escape(str(exc))}); it applies and "
            "journals the unban when the source next connects",
            file=sys.stderr,
        )
        return 0
    if answer.get("ok") is not True:
        error = escape(str(answer.get("error") or "no reason given"))
        print(f"conduit: the gateway did not apply it now: {error}", file=sys.stderr)
    elif answer.get("active") is False:
        out.print("the running gateway defends nothing now; its next defender journals the unban")
    else:
        # in the answer's list, or taken a moment earlier by a knock of the source
        out.print("the running gateway applied it (journalled as defender.unban)", markup=False)
    return 0
