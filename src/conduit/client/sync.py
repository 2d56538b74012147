"""``Client`` + :mod:`conduit.client.delta`: a delta where the far side allows, else a full copy.

::

    async with Client("gw.example", user="ops") as client:
        result = await sync_put(client, Path("fw.bin"), "/firmware/fw.bin")
        print(result.mode, result.sent, result.reused, result.note)

A delta needs an old copy on the receiving side and a far side that hashes
blocks and copies data itself: a Conduit gateway (:mod:`~conduit.client.delta`),
or an upload to an OpenSSH device (``copy-data``) whose block-hash command the
caller allows (``block_hash``, :mod:`~conduit.client.devicedelta`). Anything else (a new
file, a plain OpenSSH device, legacy SCP, a gateway whose policy refuses the
read) is a full copy through ``Client.put``/``get``, with the reason in
``SyncResult.note``; the SHA-256 is end to end either way.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import asyncssh

from conduit.client import delta, devicedelta
from conduit.client.client import Client
from conduit.client.common import LocalFault, Transfer
from conduit.client.delta import SyncResult, Unavailable
from conduit.client.errors import ClientError, describe

_FAULTS = (asyncssh.Error, OSError, TimeoutError)


def _full(sent: Transfer, note: str) -> SyncResult:
    return SyncResult(
        sent.source,
        sent.destination,
        sent.bytes,
        sent.sha256,
        "full",
        sent.bytes,
        0,
        sent.seconds,
        note,
    )


async def _far_exists(client: Client, remote: str) -> bool:
    assert client.sftp is not None
    try:
        await client.sftp.stat(remote)
    except asyncssh.SFTPNoSuchFile:
        return False
    return True


async def sync_put(
    client: Client,
    local: Path,
    remote: str,
    *,
    block_hash: str | None = None,
    on_hashed: delta.Hook | None = None,
) -> SyncResult:
    """Make the far ``remote`` (or ``remote``/NAME for a folder) equal to ``local``.

    ``block_hash``: the command template a plain device allows for block hashes
    (:mod:`conduit.client.devicedelta`); not used through a gateway.
    """
    if not local.is_file():
        raise ClientError(f"{local}: not a file")
    if block_hash is not None:
        devicedelta.check_template(block_hash)
    conn = client._connection()
    try:
        if await client.is_dir(remote):
            remote = posixpath.join(remote, local.name)
        if client.sftp is None:
            note = "legacy SCP: full copy"
        elif not await _far_exists(client, remote):
            note = "no far copy yet: full copy"
        else:
            try:
                if block_hash is not None and not client.gateway:
                    hasher = devicedelta.command_hasher(conn, block_hash)
                    return await devicedelta.upload(
                        conn, local, remote, hasher, on_hashed=on_hashed
                    )
                return await delta.upload(conn, local, remote, on_hashed=on_hashed)
            except Unavailable as why:
                note = f"{why}: full copy"
    except _FAULTS as exc:
        place = str(local) if isinstance(exc, LocalFault) else f"{client.endpoint.host}:{remote}"
        raise ClientError(describe(exc, place)) from exc
    [sent] = await client.put(local, remote, verify=not client.gateway)
    return _full(sent, note)


async def sync_get(
    client: Client, remote: str, local: Path, *, on_hashed: delta.Hook | None = None
) -> SyncResult:
    """Make the local ``local`` (or ``local``/NAME for a folder) equal to the far ``remote``."""
    if local.is_dir():
        local = local / posixpath.basename(remote)
    try:
        if client.sftp is None:
            note = "legacy SCP: full copy"
        elif not local.is_file():
            note = "no local copy yet: full copy"
        else:
            try:
                return await delta.download(client.sftp, remote, local, on_hashed=on_hashed)
            except Unavailable as why:
                note = f"{why}: full copy"
    except _FAULTS as exc:
        place = str(local) if isinstance(exc, LocalFault) else f"{client.endpoint.host}:{remote}"
        raise ClientError(describe(exc, place)) from exc
    [got] = await client.get(remote, local)
    return _full(got, note)
