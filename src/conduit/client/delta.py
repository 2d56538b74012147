"""``conduit sync``: send only the blocks that changed, over SFTP alone.

The far file's blocks are hashed *where it lives*, with the
``check-file-handle`` request (SHA-256 per block, a Conduit gateway answers
it; :mod:`conduit._asyncssh.sftpclient`); the local file is hashed the same
way and compared block by block at the same offsets (an edit in place, an
append or a truncation keeps the other blocks; an insertion that shifts the
rest is sent from there on: there is no rolling checksum). The new far file
is then assembled front to back in a new upload: unchanged runs with
``copy-data`` (copied from the old file on the far side, nothing crosses the
link), changed blocks written from here. Before the upload is committed its
SHA-256 (``check-file-handle`` on the upload: what the far side actually
holds) must equal the local file's; otherwise the far file changed under us:
the upload is thrown away (through a gateway: the SFTP session ends without
closing it, and the gateway aborts it) and the sync starts over once, then
fails. Nothing partial or wrong ever gets the final name.

A download is the mirror image: far block hashes, the local old copy's
blocks reused, only changed ranges read, each fetched block checked against
its far hash, the result written under the hidden partial name, its SHA-256
compared with the far file's whole hash, then fsynced and renamed.

A server without ``check-file-handle`` or ``copy-data`` (a plain OpenSSH
device) gets a full copy; :class:`SyncResult` says which happened and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from conduit._asyncssh.sftpclient import check_file
from conduit.client.common import LocalFault, fsync_replace, partial_path
from conduit.client.errors import RemoteMismatch

MIN_BLOCK = 4 * 1024
MAX_BLOCK = 1024 * 1024
MAX_BLOCKS = 4096  # per check-file request: the gateway's bound
MAX_COPY = 64 * 1024 * 1024  # per copy-data request: the gateway's bound
MAX_WHOLE = 4 * 1024 * 1024 * 1024  # bytes one check-file request may read there
WRITE_RUN = 1024 * 1024
ATTEMPTS = 2

Run = tuple[bool, int, int]
Hook = Callable[[int], Awaitable[None]]
"""Called with the attempt number once the far hashes are known (tests use it)."""


@dataclass(frozen=True)
class SyncResult:
    """One file synced: how, how much crossed the link, the SHA-256 of the result."""

    source: str
    destination: str
    size: int
    sha256: str
    mode: str
    """``delta``, or ``full`` with the reason in ``note``."""
    sent: int
    """File bytes that crossed the link (changed blocks, or the whole file)."""
    reused: int
    """File bytes taken from the old copy on the receiving side."""
    seconds: float
    note: str = ""


class Unavailable(Exception):
    """The far side cannot do a delta (no block hashes, no copy-data): copy it whole."""


def block_size(size: int, blocks: int = 32768) -> int:
    """A power of two giving about ``blocks`` blocks (4 KiB to 1 MiB)."""
    block = MIN_BLOCK
    while block < MAX_BLOCK and size // block > blocks:
        block *= 2
    return block


def local_blocks(path: Path, block: int) -> tuple[list[bytes], str, int]:
    """The SHA-256 of each block of ``path``, of the whole file, and its size."""
    whole = hashlib.sha256()
    hashes: list[bytes] = []
    size = 0
    try:
        with path.open("rb") as handle:
            while data := handle.read(block):
                whole.update(data)
                hashes.append(hashlib.sha256(data).digest())
                size += len(data)
    except OSError as exc:
        raise LocalFault.of(exc) from exc
    return hashes, whole.hexdigest(), size


async def far_blocks(
    sftp: asyncssh.SFTPClient, handle: bytes, size: int, block: int
) -> list[bytes]:
    """The far file's block hashes, asked for in requests of at most MAX_BLOCKS."""
    span = MAX_BLOCKS * block
    try:
        parts = await asyncio.gather(
            *(check_file(sftp, handle, start, span, block) for start in range(0, size, span))
        )
    except asyncssh.SFTPOpUnsupported as exc:
        raise Unavailable(f"the far side offers no block hashes ({exc.reason})") from None
    joined = b"".join(parts)
    return [joined[i : i + 32] for i in range(0, len(joined), 32)]


def plan(
    local: list[bytes], far: list[bytes], size: int, block: int
) -> list[tuple[bool, int, int]]:
    """Runs of ``(reuse, offset, length)`` covering the new file front to back."""
    runs: list[Run] = []
    for index, digest in enumerate(local):
        offset = index * block
        length = min(block, size - offset)
        reuse = index < len(far) and far[index] == digest
        if runs:
            last_reuse, last_offset, last_length = runs[-1]
            limit = MAX_COPY if reuse else WRITE_RUN
            if last_reuse == reuse and last_length + length <= limit:
                runs[-1] = (reuse, last_offset, last_length + length)
                continue
        runs.append((reuse, offset, length))
    return runs


async def assemble(
    sftp: asyncssh.SFTPClient,
    old: asyncssh.SFTPClientFile,
    new: asyncssh.SFTPClientFile,
    local: Path,
    runs: list[Run],
) -> tuple[int, int]:
    """Write ``new`` front to back: reused runs copied from ``old`` on the far side,
    the others from ``local``. Returns (bytes sent, bytes reused)."""
    sent = reused = 0
    try:
        source = local.open("rb")
    except OSError as exc:
        raise LocalFault.of(exc) from exc
    with source:
        for reuse, offset, length in runs:
            if reuse:
                await sftp.remote_copy(old, new, offset, length, offset)
                reused += length
            else:
                source.seek(offset)
                await new.write(source.read(length), offset)
                sent += length
    return sent, reused


async def upload(
    conn: asyncssh.SSHClientConnection,
    local: Path,
    remote: str,
    *,
    on_hashed: Hook | None = None,
) -> SyncResult:
    """Sync ``local`` over the far file ``remote`` (which must exist); see the module."""
    for attempt in range(1, ATTEMPTS + 1):
        result = await _upload_once(conn, local, remote, attempt, on_hashed)
        if result is not None:
            return result
    raise RemoteMismatch(
        f"{remote}: the far file kept changing while it was synced ({ATTEMPTS} attempts):"
        " nothing replaced"
    )


async def _upload_once(
    conn: asyncssh.SSHClientConnection,
    local: Path,
    remote: str,
    attempt: int,
    on_hashed: Hook | None,
) -> SyncResult | None:
    began = time.monotonic()
    sftp = await conn.start_sftp_client()
    try:
        if not sftp.supports_remote_copy:
            raise Unavailable("the far side offers no copy-data")
        far_size = (await sftp.stat(remote)).size or 0
        block = block_size(max(far_size, local.stat().st_size))
        hashes, sha256, size = await asyncio.to_thread(local_blocks, local, block)
        async with sftp.open(remote, "rb", block_size=0) as old:
            far = await far_blocks(sftp, old.handle, far_size, block)
            if on_hashed is not None:
                await on_hashed(attempt)
            new = await sftp.open(remote, "wb")  # writes split to the server's limits
            sent, reused = await assemble(sftp, old, new, local, plan(hashes, far, size, block))
            held = (await check_file(sftp, new.handle, 0, 0, 0)).hex()
            if held != sha256:
                return None  # finally: the session ends with ``new`` open: aborted
            await new.close()
        return SyncResult(
            str(local), remote, size, sha256, "delta", sent, reused, time.monotonic() - began
        )
    finally:
        # Without the close above, ``new`` is still open when its session ends:
        # the gateway aborts such an upload, it is never committed.
        sftp.exit()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sftp.wait_closed(), 10)


async def download(
    sftp: asyncssh.SFTPClient,
    remote: str,
    target: Path,
    *,
    on_hashed: Hook | None = None,
) -> SyncResult:
    """Sync the far file ``remote`` over the local ``target`` (which must exist)."""
    for attempt in range(1, ATTEMPTS + 1):
        result = await _download_once(sftp, remote, target, attempt, on_hashed)
        if result is not None:
            return result
    raise RemoteMismatch(
        f"{remote}: the far file kept changing while it was synced ({ATTEMPTS} attempts):"
        " nothing replaced"
    )


async def _download_once(
    sftp: asyncssh.SFTPClient, remote: str, target: Path, attempt: int, on_hashed: Hook | None
) -> SyncResult | None:
    began = time.monotonic()
    partial = partial_path(target)
    async with sftp.open(remote, "rb") as far_file:
        far_size = (await far_file.stat()).size or 0
        if far_size > MAX_WHOLE:
            raise Unavailable("the far file is too large for one whole-file hash")
        block = block_size(max(far_size, target.stat().st_size))
        far = await far_blocks(sftp, far_file.handle, far_size, block)
        whole = (await check_file(sftp, far_file.handle, 0, 0, 0)).hex()
        if on_hashed is not None:
            await on_hashed(attempt)
        hashes, _, _ = await asyncio.to_thread(local_blocks, target, block)
        digest = hashlib.sha256()
        sent = reused = 0
        try:
            with target.open("rb") as old, partial.open("wb") as out:
                for index, far_digest in enumerate(far):
                    offset = index * block
                    length = min(block, far_size - offset)
                    if index < len(hashes) and hashes[index] == far_digest:
                        old.seek(offset)
                        data = old.read(length)
                        reused += length
                    else:
                        data = await far_file.read(length, offset)
                        sent += len(data)
                        if hashlib.sha256(data).digest() != far_digest:
                            break  # the far file changed after it was hashed
                    digest.update(data)
                    out.write(data)
                else:
                    out.flush()
            if digest.hexdigest() != whole or partial.stat().st_size != far_size:
                partial.unlink(missing_ok=True)
                return None
            fsync_replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise LocalFault.of(exc) from exc
    return SyncResult(
        remote, str(target), far_size, whole, "delta", sent, reused, time.monotonic() - began
    )
