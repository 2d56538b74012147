"""One file over SFTP, hashed as it streams, atomic on both sides.

**Upload**: the bytes go to a hidden temp name in the target folder
(``.NAME.conduit-XXXXXXXX.part``), are optionally read back and compared
(``verify``), get their times and mode (``preserve``), and only then are
renamed over the target with ``posix-rename@openssh.com`` (one atomic step on
an OpenSSH server and on a Conduit gateway). A server without that extension
gets a plain rename, after removing an existing target (the one moment a
reader could see no file, never a partial one). Any failure removes the temp
file, best effort.

**Download**: see :mod:`conduit.client.common`; ``resume`` continues a local
partial after the far side's ``sha256sum`` of the same prefix matched it
(the device needs a shell for that; without one the download starts over).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import re
import shlex
import time
from pathlib import Path

import asyncssh

from conduit.client.common import (
    CHUNK,
    FarHash,
    LocalFault,
    Progress,
    Throttle,
    Transfer,
    fsync_replace,
    hash_file,
    partial_path,
    temp_name,
)
from conduit.client.errors import ClientError, RemoteMismatch

PREFIX_HASH_TIMEOUT = 60.0
CLEANUP_TIMEOUT = 5.0


def _chunk(throttle: Throttle) -> int:
    if throttle.rate is None:
        return CHUNK
    return int(min(CHUNK, max(16384, throttle.rate / 4)))


async def remote_sha256(sftp: asyncssh.SFTPClient, path: str, throttle: Throttle) -> str:
    """Read ``path`` back front to back and hash it (the far side computes nothing)."""
    digest = hashlib.sha256()
    offset = 0
    async with sftp.open(path, "rb") as handle:
        while True:
            block = await _read(handle, _chunk(throttle), offset)
            if not block:
                return digest.hexdigest()
            digest.update(block)
            offset += len(block)
            await throttle.take(len(block))


async def _read(handle: asyncssh.SFTPClientFile, size: int, offset: int) -> bytes:
    data = await handle.read(size, offset)
    assert isinstance(data, bytes)  # opened "rb"
    return data


def _read_back(sftp: asyncssh.SFTPClient, throttle: Throttle) -> FarHash:
    async def digest(path: str) -> str:
        return await remote_sha256(sftp, path, throttle)

    return digest


async def sha256sum(conn: asyncssh.SSHClientConnection, path: str) -> str:
    """The device's own ``sha256sum -- PATH`` (one fixed command, the path quoted)."""
    try:
        result = await conn.run(
            f"sha256sum -- {shlex.quote(path)}", check=False, timeout=PREFIX_HASH_TIMEOUT
        )
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        raise ClientError(f"{path}: the device's sha256sum did not run ({exc})") from exc
    output = result.stdout if isinstance(result.stdout, str) else ""
    if result.exit_status != 0 or not re.match(r"^[0-9a-f]{64}\b", output):
        error = result.stderr if isinstance(result.stderr, str) else ""
        first = (error.strip().splitlines() or ["no hash in its output"])[0]
        raise ClientError(f"{path}: the device's sha256sum failed: {first}")
    return output[:64]


async def upload(
    sftp: asyncssh.SFTPClient,
    local: Path,
    remote: str,
    *,
    preserve: bool = False,
    verify: bool = False,
    atomic: bool = True,
    progress: Progress | None = None,
    throttle: Throttle | None = None,
    far_hash: FarHash | None = None,
) -> Transfer:
    throttle = throttle or Throttle(None)
    began = time.monotonic()
    info = local.stat()
    target = temp_name(remote) if atomic else remote
    digest = hashlib.sha256()
    offset = 0
    try:
        source = local.open("rb")
    except OSError as exc:
        raise LocalFault.of(exc) from exc
    try:
        with source:
            async with sftp.open(target, "wb") as handle:
                while block := source.read(_chunk(throttle)):
                    digest.update(block)
                    await handle.write(block, offset)
                    offset += len(block)
                    if progress:
                        progress(local.name, offset, info.st_size)
                    await throttle.take(len(block))
        sha256 = digest.hexdigest()
        if preserve:
            await sftp.chmod(target, info.st_mode & 0o7777)
            await sftp.utime(target, (info.st_atime, info.st_mtime))
        verified = False
        if verify:
            far = await (far_hash or _read_back(sftp, throttle))(target)
            if far != sha256:
                raise RemoteMismatch(
                    f"{remote}: the far copy hashes to {far[:16]}..., sent {sha256[:16]}..."
                    ": not kept"
                )
            verified = True
        if atomic:
            await _rename_over(sftp, target, remote)
    except BaseException:
        if atomic:
            with contextlib.suppress(Exception):  # bounded: the far side may be hanging
                await asyncio.wait_for(sftp.remove(target), CLEANUP_TIMEOUT)
        raise
    return Transfer(str(local), remote, offset, sha256, time.monotonic() - began, "sftp", verified)


async def _rename_over(sftp: asyncssh.SFTPClient, temp: str, remote: str) -> None:
    try:
        await sftp.posix_rename(temp, remote)
    except asyncssh.SFTPOpUnsupported:
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
            await sftp.remove(remote)
        await sftp.rename(temp, remote)


async def prefix_matches(
    conn: asyncssh.SSHClientConnection, remote: str, length: int, expected: str
) -> bool:
    """Whether the far file's first ``length`` bytes hash to ``expected`` (its ``sha256sum``)."""
    command = f"head -c {length} -- {shlex.quote(remote)} | sha256sum"
    try:
        result = await conn.run(command, check=False, timeout=PREFIX_HASH_TIMEOUT)
    except (asyncssh.Error, OSError, TimeoutError):
        return False
    output = result.stdout if isinstance(result.stdout, str) else ""
    return result.exit_status == 0 and output[:64] == expected


async def download(
    sftp: asyncssh.SFTPClient,
    remote: str,
    local: Path,
    *,
    conn: asyncssh.SSHClientConnection | None = None,
    preserve: bool = False,
    verify: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    throttle: Throttle | None = None,
    far_hash: FarHash | None = None,
) -> Transfer:
    throttle = throttle or Throttle(None)
    began = time.monotonic()
    attrs = await sftp.stat(remote)
    if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
        raise asyncssh.SFTPFileIsADirectory(f"{remote} is a directory")
    total = attrs.size or 0
    partial = partial_path(local)
    digest = hashlib.sha256()
    offset = 0
    if resume and partial.is_file() and 0 < partial.stat().st_size <= total:
        kept, count = hash_file(partial)
        if conn is not None and await prefix_matches(conn, remote, count, kept.hexdigest()):
            digest, offset = kept, count
    resumed = offset
    try:
        sink = partial.open("r+b" if offset else "wb")
    except OSError as exc:
        raise LocalFault.of(exc) from exc
    try:
        with sink:
            sink.seek(offset)
            sink.truncate()
            async with sftp.open(remote, "rb") as handle:
                while block := await _read(handle, _chunk(throttle), offset):
                    digest.update(block)
                    try:
                        sink.write(block)
                    except OSError as exc:
                        raise LocalFault.of(exc) from exc
                    offset += len(block)
                    if progress:
                        progress(posixpath.basename(remote), offset, max(total, offset))
                    await throttle.take(len(block))
    except LocalFault:
        # A full or read-only disk leaves nothing; a cut link keeps the hidden
        # partial for ``resume``.
        partial.unlink(missing_ok=True)
        raise
    sha256 = digest.hexdigest()
    verified = False
    if verify:
        far = await (far_hash or _read_back(sftp, throttle))(remote)
        if far != sha256:
            partial.unlink(missing_ok=True)
            raise RemoteMismatch(
                f"{remote}: the far file hashes to {far[:16]}..., received {sha256[:16]}..."
                ": not kept"
            )
        verified = True
    if preserve:
        if attrs.permissions is not None:
            os.chmod(partial, attrs.permissions & 0o7777)
        if attrs.atime is not None and attrs.mtime is not None:
            os.utime(partial, (attrs.atime, attrs.mtime))
    fsync_replace(partial, local)
    return Transfer(
        remote, str(local), offset, sha256, time.monotonic() - began, "sftp", verified, resumed
    )
