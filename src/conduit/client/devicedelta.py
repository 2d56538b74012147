"""``conduit sync`` to a plain SSH device: block hashes by a command the device allows.

An OpenSSH device has no block-hash extension, but its sftp-server has
``copy-data`` (OpenSSH 9.0 and later), and many devices have a shell with
``split`` and ``sha256sum``. Where the operator allows it (``block_hash``:
a command template with ``{block}`` and ``{path}``, the path shell-quoted;
``split -b {block} --filter=sha256sum -- {path}`` with GNU coreutils), the
far file is hashed in blocks by that one command, the new file is assembled
under a hidden temp name (``copy-data`` for unchanged runs, writes for the
others), hashed again by the same command, and renamed over the old one with
``posix-rename`` only when every block matches the local file's. A mismatch
(the far file changed meanwhile) removes the temp file and starts over once.

The command forks a hash process per block, so blocks are larger here than
through a gateway (about 4,096 of them, at most 1 MiB each).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh

from conduit.client.common import temp_name
from conduit.client.delta import (
    ATTEMPTS,
    Hook,
    SyncResult,
    Unavailable,
    assemble,
    block_size,
    local_blocks,
    plan,
)
from conduit.client.errors import ClientError, RemoteMismatch

COMMAND_BLOCKS = 4096
COMMAND_TIMEOUT = 600.0
CLEANUP_TIMEOUT = 10.0
_LINE = re.compile(r"([0-9a-f]{64})(\s.*)?")

FarHasher = Callable[[str, int, int], Awaitable[list[bytes]]]
"""``hashes(path, size, block)``: the far file's block hashes."""


def check_template(template: str) -> str:
    """A block-hash command must name the block size and the path, and nothing else."""
    rest = template.replace("{block}", "").replace("{path}", "")
    if "{block}" not in template or "{path}" not in template or "{" in rest or "}" in rest:
        raise ClientError(f"block_hash {template!r}: use {{block}} and {{path}}, nothing else")
    return template


def command_hasher(conn: asyncssh.SSHClientConnection, template: str) -> FarHasher:
    """Block hashes from the device's own command, one SHA-256 per output line."""
    check_template(template)

    async def hashes(path: str, size: int, block: int) -> list[bytes]:
        command = template.replace("{block}", str(block)).replace("{path}", shlex.quote(path))
        run = conn.run(command, check=False, stdin=asyncssh.DEVNULL)  # EOF: split waits for it
        result = await asyncio.wait_for(run, COMMAND_TIMEOUT)
        if result.exit_status != 0:
            error = str(result.stderr or "").strip().splitlines()
            why = f": {error[0][:200]}" if error else ""
            raise Unavailable(f"the block hash command exited {result.exit_status}{why}")
        lines = [line for line in str(result.stdout or "").splitlines() if line]
        found = [_LINE.fullmatch(line) for line in lines]
        if not all(found) or len(found) != -(-size // block):
            raise Unavailable(
                f"the block hash command gave {len(lines)} lines for {-(-size // block)} blocks"
            )
        return [bytes.fromhex(m.group(1)) for m in found if m]

    return hashes


async def upload(
    conn: asyncssh.SSHClientConnection,
    local: Path,
    remote: str,
    hasher: FarHasher,
    *,
    on_hashed: Hook | None = None,
) -> SyncResult:
    """Sync ``local`` over the device's existing ``remote``; see the module."""
    for attempt in range(1, ATTEMPTS + 1):
        result = await _once(conn, local, remote, hasher, attempt, on_hashed)
        if result is not None:
            return result
    raise RemoteMismatch(
        f"{remote}: the far file kept changing while it was synced ({ATTEMPTS} attempts):"
        " nothing replaced"
    )


async def _once(
    conn: asyncssh.SSHClientConnection,
    local: Path,
    remote: str,
    hasher: FarHasher,
    attempt: int,
    on_hashed: Hook | None,
) -> SyncResult | None:
    began = time.monotonic()
    async with conn.start_sftp_client() as sftp:
        if not sftp.supports_remote_copy:
            raise Unavailable("the far side offers no copy-data")
        attrs = await sftp.stat(remote)
        far_size = attrs.size or 0
        block = block_size(max(far_size, local.stat().st_size), COMMAND_BLOCKS)
        hashes, sha256, size = await asyncio.to_thread(local_blocks, local, block)
        far = await hasher(remote, far_size, block)
        if on_hashed is not None:
            await on_hashed(attempt)
        temp = temp_name(remote)
        try:
            async with sftp.open(remote, "rb") as old, sftp.open(temp, "wb") as new:
                runs = plan(hashes, far, size, block)
                sent, reused = await assemble(sftp, old, new, local, runs)
                with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                    await new.fsync()
            if await hasher(temp, size, block) != hashes:
                await _remove(sftp, temp)
                return None
            if attrs.permissions is not None:
                await sftp.chmod(temp, attrs.permissions & 0o7777)
            await sftp.posix_rename(temp, remote)
        except BaseException:
            await _remove(sftp, temp)
            raise
    return SyncResult(
        str(local), remote, size, sha256, "delta", sent, reused, time.monotonic() - began
    )


async def _remove(sftp: asyncssh.SFTPClient, path: str) -> None:
    with contextlib.suppress(Exception):  # bounded: the far side may be hanging
        await asyncio.wait_for(sftp.remove(path), CLEANUP_TIMEOUT)
