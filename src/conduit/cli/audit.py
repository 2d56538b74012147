"""``conduit audit verify|tail|search|export``: the journal for auditors.

Thin wrappers: integrity lives in :mod:`conduit.audit.verify`, queries in
:mod:`conduit.audit.index`. Every value shown on a terminal is escaped, so a
hostile user name or path cannot move the cursor or recolour the screen.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import re
import sqlite3
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from conduit.audit import anchors
from conduit.audit.anchors import Anchor
from conduit.audit.checkpoint import KEY_NAME, fingerprint, load_public_key
from conduit.audit.events import FIELDS, Record, encode
from conduit.audit.index import Index, Query, parse_time
from conduit.audit.reader import JournalReader, last_records
from conduit.audit.verify import verify
from conduit.cli.main import CommandError
from conduit.cli.records import Shown, cell, safe, shown_path, summary

#: rows a search shows in its table; --json streams all
TABLE_LIMIT = 1000


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show an option's default when it has one worth showing (not None or off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or action.help is None:
            return action.help
        return super()._get_help_string(action)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="verify, tail, search and export the journal",
        description="Read the gateway's audit journal: check its integrity, follow it, "
        "search it and export it. The journal is the one the policy file names "
        "([audit] journal, by default DATA_DIR/audit), or --journal DIR.",
    )
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=summary, description=description, formatter_class=_Help
        )
        p.add_argument("--config", type=Path, default=Path("conduit.toml"), help="policy file")
        p.add_argument("--journal", type=Path, help="journal folder (instead of the config's)")
        return p

    p = add(
        "verify",
        "check chain, sequence, checkpoints and signatures",
        "Check every record's hash chain and sequence number, every checkpoint and its "
        "Ed25519 signature. Exit status 0: intact; 1: the first fault is printed.",
    )
    p.add_argument("--from", dest="start", type=Path, help="start at this journal file")
    p.add_argument(
        "--key",
        type=Path,
        help="the gateway's audit public key, a pinned copy (default: audit_ed25519.pub "
        "in the data folder or beside the journal)",
    )
    p.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="a checkpoint the journal must reach (seq and hash of checkpoint.json)",
    )
    p.add_argument(
        "--anchor-from",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a SIEM's received log (RFC 5424 or CEF): its newest checkpoint is an anchor",
    )
    p.add_argument(
        "--anchor-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="an anchor folder (default: [audit] anchor_dirs of the config)",
    )
    p.set_defaults(handler=cmd_verify)

    p = add(
        "tail",
        "the latest events; -f to follow",
        "Print the latest events, one line each: time, sequence number, type, outcome, "
        "user, source address, path (old -> new for a rename), bytes, SHA-256 and the reason "
        "or error. With -f, keep printing events as they are journalled.",
    )
    p.add_argument("-n", "--lines", type=int, default=10, help="how many of the latest events")
    p.add_argument("-f", "--follow", action="store_true", help="wait for new events")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.set_defaults(handler=cmd_tail)

    p = add(
        "search",
        "find events by user, path, hash, time, type, outcome",
        "Find events through the journal's search index (brought up to date first). "
        "Filters combine with AND. The table shows 16 hex digits of each SHA-256; "
        "--sha256 takes the whole hash or a prefix of at least 8 digits.",
    )
    _filters(p)
    p.add_argument(
        "--limit",
        type=int,
        help=f"at most this many (default: {TABLE_LIMIT} in the table, all with --json)",
    )
    p.add_argument("--newest", action="store_true", help="newest first")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.set_defaults(handler=cmd_search)

    p = add(
        "export",
        "events for auditors as JSON Lines or CSV",
        "Write the matching events (all of them without filters) for auditors: JSON Lines "
        "are the journal's exact lines; CSV has one column per field, escaped like the "
        "terminal and safe to open in a spreadsheet.",
    )
    _filters(p)
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="output format")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    p.set_defaults(handler=cmd_export)


SHA256_PREFIX_MIN = 8


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", help="principal or user name as given")
    p.add_argument("--path", help="virtual path; * ? [..] match like a shell glob")
    p.add_argument(
        "--sha256",
        help=f"file SHA-256 in hex, or a prefix of at least {SHA256_PREFIX_MIN} digits",
    )
    p.add_argument("--since", help="ISO 8601 time (UTC if no offset) or 15m / 2h / 7d ago")
    p.add_argument("--until", help="same forms as --since; exclusive")
    p.add_argument("--type", help="event type, e.g. file.upload or file.*")
    p.add_argument(
        "--outcome",
        choices=["success", "denied", "failed", "started", "intent"],
        help="only events with this outcome",
    )


def sha256_prefix(text: str) -> str:
    """``text`` as a lower-case SHA-256 or prefix of one; CommandError if it is not."""
    digest = text.strip().lower()
    if not re.fullmatch(rf"[0-9a-f]{{{SHA256_PREFIX_MIN},64}}", digest):
        raise CommandError(
            f"--sha256 {safe(text)!s}: give the file's SHA-256 in hex, "
            f"or its first {SHA256_PREFIX_MIN} digits or more"
        )
    return digest


def journal_dir(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(journal folder, data_dir holding the audit key if known)."""
    if args.journal is not None:
        return args.journal, None
    start = getattr(args, "start", None)
    if start is not None and start.parent != Path("") and not args.config.exists():
        return start.parent, None
    from conduit.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise CommandError(f"{exc} (or give --journal DIR)") from None
    return config.audit.journal, config.gateway.data_dir


def _existing(directory: Path) -> Path:
    if not directory.is_dir():
        raise CommandError(f"{directory}: no such journal folder")
    return directory


def cmd_verify(args: argparse.Namespace) -> int:
    directory, data_dir = journal_dir(args)
    _existing(directory)
    key_path = args.key
    if key_path is None:
        for candidate in (data_dir, directory.parent, directory):
            if candidate is not None and (candidate / f"{KEY_NAME}.pub").exists():
                key_path = candidate / f"{KEY_NAME}.pub"
                break
    key = None
    if key_path is not None:
        try:
            key = load_public_key(key_path)
        except (OSError, ValueError) as exc:
            raise CommandError(f"{key_path}: cannot read the audit public key: {exc}") from None
    report = verify(directory, key, args.start, _anchors(args))
    for note in report.notes:
        print(f"note: {safe(note)}")
    if report.broken is not None:
        print(f"FAULT {safe(str(report.broken))}")
        print(f"verified {report.records} record(s) before the fault", file=sys.stderr)
        return 1
    span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "empty"
    signer = f", signed by {fingerprint(key)}" if key else ", signatures NOT checked"
    print(
        f"OK: {report.records} record(s) in {report.files} file(s), {span}, "
        f"{report.checkpoints} checkpoint(s){signer}"
    )
    return 0


def _anchors(args: argparse.Namespace) -> list[Anchor]:
    """The anchors given on the command line and the config's anchor folders."""
    found: list[Anchor] = []
    for text in args.anchor:
        try:
            found.append(anchors.parse(text))
        except ValueError as exc:
            raise CommandError(f"--anchor {exc}") from None
    for path in args.anchor_from:
        try:
            anchor = anchors.from_siem_log(path)
        except OSError as exc:
            raise CommandError(f"{path}: cannot read the SIEM log: {exc}") from None
        if anchor is None:
            raise CommandError(f"{path}: no conduit checkpoint found in this SIEM log")
        found.append(anchor)
    dirs = list(args.anchor_dir)
    if not dirs and args.journal is None and args.config.exists():
        from conduit.config import ConfigError, load

        with contextlib.suppress(ConfigError):
            dirs = list(load(args.config).audit.anchor_dirs)
    for item in anchors.from_dirs(dirs):
        if isinstance(item, str):
            raise CommandError(f"FAULT missing: {item}", code=1)
        found.append(item)
    return found


def cmd_tail(args: argparse.Namespace) -> int:
    directory = _existing(journal_dir(args)[0])
    last = last_records(directory, max(args.lines, 0))
    reader = JournalReader(directory)
    after = last[-1]["seq"] if last else 0
    if not last and args.follow:
        while batch := reader.read_after(after, 10_000):
            after = batch[-1]["seq"]
    _emit(last, args.json)
    while args.follow:
        time.sleep(0.5)
        batch = reader.read_after(after, 10_000)
        if batch:
            after = batch[-1]["seq"]
            _emit(batch, args.json)
    return 0


def _emit(records: Iterable[Record], as_json: bool, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for record in records:
        out.write((encode(record).decode() if as_json else summary(record)) + "\n")
    out.flush()


def _query(args: argparse.Namespace) -> Query:
    try:
        return Query(
            user=args.user,
            path=args.path,
            sha256=sha256_prefix(args.sha256) if args.sha256 is not None else None,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            type=args.type,
            outcome=args.outcome,
            limit=getattr(args, "limit", None),
            newest_first=getattr(args, "newest", False),
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _index(directory: Path) -> Index:
    try:
        index = Index(directory)
        index.refresh()
    except (sqlite3.Error, OSError) as exc:
        raise CommandError(f"{directory}: cannot open the search index: {exc}") from None
    return index


def cmd_search(args: argparse.Namespace) -> int:
    directory = _existing(journal_dir(args)[0])
    query = _query(args)
    if not args.json and query.limit is None:
        query.limit = TABLE_LIMIT  # a table of a million rows helps nobody; --json streams all
    index = _index(directory)
    try:
        if args.json:
            _emit(index.search(query), True)
            return 0
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(show_edge=False, header_style="bold")
        for col in (
            "seq",
            "time (UTC)",
            "type",
            "outcome",
            "user",
            "source",
            "path",
            "bytes",
            "sha256",
            "detail",
        ):
            table.add_column(col, overflow="fold")
        count = 0
        digests: set[str] = set()
        for r in index.search(query):
            count += 1
            digests.add(r.get("sha256") or "")
            table.add_row(
                *(
                    Text(v if isinstance(v, Shown) else safe(v))
                    for v in (
                        r["seq"],
                        r["ts"].replace("T", " ").rstrip("Z"),
                        r["type"],
                        r["outcome"],
                        r.get("principal") or r.get("user_given"),
                        r.get("source"),
                        Shown(shown_path(r)),
                        r.get("bytes"),
                        (r.get("sha256") or "")[:16],
                        r.get("error") or r.get("reason") or r.get("rule"),
                    )
                )
            )
        console = Console(width=None if sys.stdout.isatty() else 200)
        console.print(table)
        more = " (the limit; use --limit N or --json for more)" if count == query.limit else ""
        console.print(f"{count} event(s){more}", style="dim")
        if query.sha256 is not None and len(digests) > 1:
            console.print(
                f"note: {len(digests)} different files have a SHA-256 starting {query.sha256}; "
                "give more digits to pick one",
                style="yellow",
            )
        return 0
    finally:
        index.close()


def cmd_export(args: argparse.Namespace) -> int:
    directory = _existing(journal_dir(args)[0])
    query = _query(args)
    index = _index(directory)
    out: TextIO
    if args.output:
        out = args.output.open("w", encoding="utf-8", errors="backslashreplace", newline="")
    else:
        out = sys.stdout
        if hasattr(out, "reconfigure"):
            out.reconfigure(errors="backslashreplace")
    try:
        if args.format == "jsonl":
            _emit(index.search(query), True, out)
            return 0
        header = ["seq", "ts", "node", "type", "outcome", *FIELDS, "extra"]
        writer = csv.writer(out)
        writer.writerow(header)
        known = set(header) | {"prev"}
        for r in index.search(query):
            extra = {k: v for k, v in r.items() if k not in known}
            row = [cell(r.get(h)) for h in header[:-1]]
            row.append(json.dumps(extra, sort_keys=True) if extra else "")
            writer.writerow(row)
        return 0
    finally:
        index.close()
        if out is not sys.stdout:
            out.close()
