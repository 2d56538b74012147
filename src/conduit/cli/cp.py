"""``conduit cp SRC... DST``: scp's command line, with SHA-256 and nothing partial.

The syntax is scp's: ``[user@]host:path`` is remote, anything else local
(``./a:b`` is a local file named ``a:b``); one side must be remote, the other
local. ``-r -p -P -i -J -l -q -F`` mean what they mean to scp. Every copied
file prints ``SHA256  DESTINATION`` on stdout (the ``sha256sum`` format, so a
list can be checked later with ``sha256sum -c`` on the receiving side); with
``--verify`` the far side's copy is read back first and the line says
``verified``. Errors are one line each on stderr; the other files still go,
and the exit status is 1 if any failed, as with scp. Progress bars (one per
file and one for the job) go to stderr when it is a terminal and ``-q`` is not
given.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from conduit.cli.main import CommandError
from conduit.client import Client, ClientError, Endpoint, Transfer, parse_remote
from conduit.client.endpoint import split_host_port
from conduit.client.errors import shown
from conduit.config.crypto import CryptoConfig
from conduit.names import escape


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cp",
        usage="%(prog)s [OPTIONS] SRC... DST",
        help="copy files to or from a device or gateway, like scp, with SHA-256",
        description="Copy files like scp: [user@]host:path is remote. Every file's SHA-256 "
        "is printed; nothing partial is left under a final name. Exit 1 if any copy failed.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="sources, then the target")
    parser.add_argument("-r", dest="recursive", action="store_true", help="copy folders")
    parser.add_argument("-p", dest="preserve", action="store_true", help="keep times and modes")
    endpoint_arguments(parser)
    parser.add_argument("-l", dest="limit", type=float, metavar="KBIT/S", help="bandwidth limit")
    parser.add_argument("-q", dest="quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--protocol",
        choices=["auto", "sftp", "scp"],
        default="auto",
        help="auto (default): SFTP, or legacy SCP when the server has no SFTP subsystem",
    )
    parser.add_argument("--verify", action="store_true", help="check the far copy's SHA-256")
    parser.add_argument(
        "--remote-hash",
        choices=["readback", "sha256sum"],
        default="readback",
        help="how --verify hashes the far copy: read it back (default), or the device's sha256sum",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted download (prefix checked)"
    )
    parser.add_argument(
        "--timeout", type=float, default=15.0, metavar="SECONDS", help="connect timeout"
    )
    parser.set_defaults(handler=run)


def _remote(spec: str) -> tuple[str | None, str, str] | None:
    try:
        return parse_remote(spec)
    except ClientError as exc:
        raise CommandError(shown(exc), code=1) from None


def plan(paths: list[str]) -> tuple[str, list[tuple[str | None, str, str]], tuple[Any, ...]]:
    """``("put", [local sources], remote)`` or ``("get", [remote sources], local)``."""
    if len(paths) < 2:
        raise CommandError("give at least one source and a target", code=1)
    *sources, target = paths
    far = _remote(target)
    parsed = [(s, _remote(s)) for s in sources]
    if far is not None:
        remote_sources = [s for s, r in parsed if r is not None]
        if remote_sources:
            raise CommandError(
                f"{escape(remote_sources[0])}: copying between two remote hosts is not supported",
                code=1,
            )
        return "put", [(None, "", s) for s in sources], far
    if any(r is None for _, r in parsed):
        local = next(s for s, r in parsed if r is None)
        raise CommandError(f"{escape(local)}: both sides are local (use cp)", code=1)
    hosts = {(r[0], r[1]) for _, r in parsed if r is not None}
    if len(hosts) > 1:
        raise CommandError("all sources of one copy must be on the same host", code=1)
    return "get", [r for _, r in parsed if r is not None], (target,)


def endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """How to reach the server, as ``scp`` spells it: what :func:`endpoint` reads."""
    parser.add_argument("-P", dest="port", type=int, metavar="PORT", help="the server's port")
    parser.add_argument("-i", dest="identity", type=Path, metavar="KEY", help="private key")
    parser.add_argument("-J", dest="jump", metavar="JUMP", help="[user@]host[:port] to go through")
    parser.add_argument(
        "-c", dest="ciphers", metavar="CIPHERS", help="cipher list (as the policy's crypto.ciphers)"
    )
    parser.add_argument("-F", dest="ssh_config", type=Path, metavar="FILE", help="ssh_config")
    parser.add_argument("--known-hosts", type=Path, metavar="FILE", help="known_hosts to trust")
    parser.add_argument("--host-key", metavar="KEY", help="accept only this host key (a pin)")


def endpoint(args: argparse.Namespace, user: str | None, host: str) -> Endpoint:
    if args.limit is not None and args.limit <= 0:
        raise CommandError(f"-l {args.limit:g}: the limit must be above 0 kbit/s", code=1)
    if args.port is not None and not 0 < args.port < 65536:
        raise CommandError(f"-P {args.port}: port must be from 1 to 65535", code=1)
    if args.jump:
        try:
            split_host_port(args.jump.rpartition("@")[2])
        except ClientError as exc:
            raise CommandError(f"-J: {shown(exc)}", code=1) from None
    crypto = None
    if args.ciphers:
        try:
            crypto = CryptoConfig(ciphers=args.ciphers)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise CommandError(f"-c {escape(args.ciphers)}: {escape(reason)}", code=1) from None
    return Endpoint(
        host,
        port=args.port,
        user=user,
        identity=args.identity,
        jump=args.jump,
        host_key=args.host_key,
        known_hosts=args.known_hosts,
        ssh_config=None if args.ssh_config is None else (args.ssh_config,),
        connect_timeout=args.timeout,
        crypto=crypto,
    )


class Bars:
    """A bar per file and one for the whole job, on stderr; nothing when off."""

    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self.progress = progress
        self.job: TaskID | None = None
        self.file: TaskID | None = None
        self.last = 0
        self.name = ""
        self.grow = total is None
        """Downloads: the job's size is learnt file by file."""
        self.job_total = total or 0
        if progress is not None:
            self.job = progress.add_task("total", total=total or 0)

    def update(self, name: str, done: int, total: int) -> None:
        if self.progress is None or self.job is None:
            return
        if self.file is None or name != self.name or done < self.last:
            if self.file is not None:
                self.progress.remove_task(self.file)
            self.file = self.progress.add_task(escape(name), total=total)
            self.name, self.last = name, 0
            if self.grow:
                self.progress.update(
                    self.job, total=(self.progress.tasks[self.job].total or 0) + total
                )
        self.progress.update(self.file, completed=done, total=total)
        self.progress.advance(self.job, done - self.last)
        self.last = done


@contextmanager
def bars(enabled: bool, total: int | None) -> Iterator[Bars]:
    if not enabled:
        yield Bars(None, None)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield Bars(progress, total)


def _local_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


async def _is_dir(client: Client, remote: str) -> bool:
    try:
        return await client.is_dir(remote)
    except ClientError:
        return False


async def copy(
    args: argparse.Namespace, out: Callable[[str], None], err: Callable[[str], None]
) -> int:
    direction, sources, target = plan(args.paths)
    failed = 0
    if direction == "put":
        user, host, remote = target
        total = sum(_local_size(Path(s)) for _, _, s in sources)
        jobs = [(Path(s), remote or ".") for _, _, s in sources]
    else:
        user, host = sources[0][0], sources[0][1]
        total = None
        jobs = [(Path(target[0]), r or ".") for _, _, r in sources]
    if direction == "put":  # a missing local file is known before connecting
        for local, _ in jobs:
            if not local.exists():
                err(f"conduit: {escape(str(local))}: no such file or folder")
                failed += 1
        jobs = [(local, remote) for local, remote in jobs if local.exists()]
        if not jobs:
            return 1
    client = Client(
        endpoint(args, user, host),
        protocol=args.protocol,
        limit_kbit=args.limit,
        remote_hash=args.remote_hash,
    )
    try:
        await client.open()
    except ClientError as exc:
        err(f"conduit: {shown(exc)}")
        return 1
    async with client:
        if len(jobs) > 1 and direction == "put":
            folder = jobs[0][1]
            if client.protocol == "scp":  # it cannot ask: several sources mean a folder
                jobs = [(local, folder.rstrip("/") + "/") for local, _ in jobs]
            elif not await _is_dir(client, folder):
                err(f"conduit: {escape(host)}:{escape(folder)}: not a folder")
                return 1
        with bars(sys.stderr.isatty() and not args.quiet, total) as progress:
            for local, remote in jobs:
                try:
                    done = await _one(client, direction, local, remote, args, progress)
                except ClientError as exc:
                    err(f"conduit: {shown(exc)}")
                    failed += 1
                    continue
                for transfer in done:
                    out(_line(transfer))
    return 1 if failed else 0


async def _one(
    client: Client, direction: str, local: Path, remote: str, args: argparse.Namespace, shown: Bars
) -> list[Transfer]:
    if direction == "put":
        return await client.put(
            local, remote, recursive=args.recursive, preserve=args.preserve,
            verify=args.verify, progress=shown.update,
        )  # fmt: skip
    return await client.get(
        remote, local, recursive=args.recursive, preserve=args.preserve,
        verify=args.verify, resume=args.resume, progress=shown.update,
    )  # fmt: skip


def _line(transfer: Transfer) -> str:
    notes = []
    if transfer.verified:
        notes.append("verified")
    if transfer.resumed_from:
        notes.append(f"resumed at {transfer.resumed_from}")
    tail = f"  ({', '.join(notes)})" if notes else ""
    return f"{transfer.sha256}  {escape(transfer.destination)}{tail}"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(copy(args, print, _stderr))
