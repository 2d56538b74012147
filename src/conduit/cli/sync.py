"""``conduit sync SRC DST``: one file, only its changed blocks over the link.

One side is ``[user@]host:path`` (as with ``conduit cp``), the other a local
file. Through a Conduit gateway the far file's blocks are hashed there and
the unchanged ones copied there (:mod:`conduit.client.delta`); a server that
cannot (a plain OpenSSH device, a new file) gets a full copy, and the output
says so. The line printed is ``SHA256  DESTINATION  (how)``; exit 1 on error.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

from conduit.cli.cp import _stderr, endpoint, endpoint_arguments, plan
from conduit.client import Client, ClientError
from conduit.client.delta import SyncResult
from conduit.client.errors import shown
from conduit.client.sync import sync_get, sync_put
from conduit.names import escape


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sync",
        usage="%(prog)s [OPTIONS] SRC DST",
        help="update a file on a device or gateway (or from it), sending only changed blocks",
        description="Make DST equal to SRC, one file, [user@]host:path on one side. Through "
        "a Conduit gateway only changed blocks cross the link (its block-hash and copy-data "
        "SFTP extensions) and the new file replaces the old atomically once its SHA-256 "
        "matches; elsewhere the file is copied whole (the output says why). Exit 1 on error.",
    )
    parser.add_argument("source", metavar="SRC", help="the file to copy from")
    parser.add_argument("target", metavar="DST", help="the file (or folder) to update")
    endpoint_arguments(parser)
    parser.add_argument(
        "--block-hash",
        metavar="COMMAND",
        help="a plain device's block-hash command, with {block} and {path} "
        "(e.g. 'split -b {block} --filter=sha256sum -- {path}'); only where the device allows it",
    )
    parser.add_argument(
        "--timeout", type=float, default=15.0, metavar="SECONDS", help="connect timeout"
    )
    parser.set_defaults(handler=run, limit=None)


def line(result: SyncResult) -> str:
    if result.mode == "delta":
        how = f"delta: sent {result.sent} bytes, reused {result.reused}"
    else:
        how = result.note or "full copy"
    return f"{result.sha256}  {escape(result.destination)}  ({escape(how)})"


async def synchronise(
    args: argparse.Namespace, out: Callable[[str], None], err: Callable[[str], None]
) -> int:
    direction, sources, target = plan([args.source, args.target])
    if direction == "put":
        user, host, remote = target
        local = Path(sources[0][2])
    else:
        user, host, remote = sources[0]
        local = Path(target[0])
    client = Client(endpoint(args, user, host))
    try:
        async with client:
            if direction == "put":
                result = await sync_put(client, local, remote or ".", block_hash=args.block_hash)
            else:
                result = await sync_get(client, remote, local)
    except ClientError as exc:
        err(f"conduit: {shown(exc)}")
        return 1
    out(line(result))
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(synchronise(args, print, _stderr))
