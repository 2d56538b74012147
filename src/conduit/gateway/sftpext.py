"""The delta sync's two SFTP extensions, decided on the gateway's own file objects.

``check-file-handle`` (draft-ietf-secsh-filexfer-extensions) returns the
SHA-256 of each block of a range of a file the client *opened for reading*:
the open was the policy's ``read`` of that path, resolved and confined by the
guard, and journalled as a download; the bytes are read through that
:class:`~conduit.transfer.Download` (its still-allowed check runs, its byte
count grows, a front-to-back pass even records the file's SHA-256), so a
hash reveals nothing a read would not. On an upload's handle it returns the
SHA-256 of what was written so far, so a client can compare before its close
commits the file.

``copy-data`` (the same draft; OpenSSH's sftp-server has it too) copies a
range of a file opened for reading onto the end of an upload: the unchanged
blocks of a sync never cross the link. Both handles were opened through the
policy in this session, the read goes through the download and the write
through the upload (size limit, hash, front-to-back rule), so a copy can do
nothing the client could not do with a read and a write.

The storage's and the policy's refusals are :class:`~conduit.errors.StorageError` faults,
turned into SFTP statuses by the caller (:mod:`conduit.gateway.sftp`).

Both are bounded per request: at most :data:`MAX_BLOCKS` hashes (the reply
stays far below one SFTP message), blocks of :data:`MIN_BLOCK` bytes to
:data:`MAX_BLOCK`, at most :data:`MAX_HASHED` bytes read per hash request
and at most :data:`MAX_COPY` bytes per copy.
"""

from __future__ import annotations

import hashlib

import asyncssh

from conduit.errors import StorageError
from conduit.transfer import Download, Upload

MIN_BLOCK = 4 * 1024
MAX_BLOCK = 16 * 1024 * 1024
MAX_BLOCKS = 4096
"""Hashes per request: 4,096 SHA-256s are a 128 KiB reply (messages stop at 256 KiB)."""
MAX_COPY = 64 * 1024 * 1024
MAX_HASHED = 4 * 1024 * 1024 * 1024
"""Bytes one check-file request may read: a 40-byte request must not cost the
gateway more than one download of a large file does."""
CHUNK = 256 * 1024


def _algorithm(algorithms: bytes) -> bytes:
    if b"sha256" not in algorithms.split(b","):
        raise asyncssh.SFTPOpUnsupported("check-file: only sha256 is offered")
    return b"sha256"


def _span(start: int, length: int, size: int, block: int) -> int:
    """The end of the range, after refusing what would be unbounded or meaningless."""
    if block and not MIN_BLOCK <= block <= MAX_BLOCK:
        raise asyncssh.SFTPFailure(
            f"check-file: block size {block} is outside {MIN_BLOCK}..{MAX_BLOCK} (or 0)"
        )
    if start > size:
        raise asyncssh.SFTPFailure(f"check-file: offset {start} is beyond the end ({size})")
    end = size if length == 0 else min(size, start + length)
    if end - start > MAX_HASHED:
        raise asyncssh.SFTPFailure(f"check-file: more than {MAX_HASHED} bytes in one request")
    if block and -(-(end - start) // block) > MAX_BLOCKS:
        raise asyncssh.SFTPFailure(f"check-file: more than {MAX_BLOCKS} blocks in one request")
    return end


async def block_hashes(download: Download, start: int, end: int, block: int) -> bytes:
    """SHA-256 of each ``block`` bytes of [start, end) (one hash of it all if ``block`` is 0)."""
    out: list[bytes] = []
    digest = hashlib.sha256()
    filled = 0
    position = start
    while position < end:
        data = await download.read(position, min(CHUNK, end - position))
        if not data:
            break  # the file shrank: the last hash covers what there was
        position += len(data)
        view = memoryview(data)
        while view:
            take = len(view) if not block else min(len(view), block - filled)
            digest.update(view[:take])
            filled += take
            view = view[take:]
            if block and filled == block:
                out.append(digest.digest())
                digest, filled = hashlib.sha256(), 0
    if filled or not block:
        out.append(digest.digest())
    return b"".join(out)


async def check_file(
    file: object, upload: Upload | None, algorithms: bytes, start: int, length: int, block: int
) -> tuple[bytes, bytes]:
    """The ``check-file-handle`` reply for a download, or for an upload so far."""
    used = _algorithm(algorithms)
    if upload is not None:
        digest = await upload.digest()
        if start or block or length not in (0, upload.bytes) or digest is None:
            raise asyncssh.SFTPFailure(
                "check-file: an upload is hashed whole, from 0, with block size 0"
            )
        return used, digest
    if not isinstance(file, Download):
        raise asyncssh.SFTPFailure("check-file: invalid handle")
    end = _span(start, length, file.size, block)
    return used, await block_hashes(file, start, end, block)


async def copy_data(
    source: object, offset: int, length: int, upload: Upload | None, target_offset: int
) -> None:
    """Append ``length`` bytes of the download ``source`` at ``offset`` to ``upload``."""
    if not isinstance(source, Download) or upload is None:
        raise asyncssh.SFTPPermissionDenied(
            "copy-data: copies from a file open for reading to one open for writing"
        )
    if not 0 < length <= MAX_COPY:
        raise asyncssh.SFTPFailure(f"copy-data: the length must be 1..{MAX_COPY} bytes")
    if target_offset != upload.bytes or await upload.digest() is None:
        raise asyncssh.SFTPOpUnsupported(
            f"copy-data: uploads are written front to back (at {upload.bytes}, not {target_offset})"
        )
    if offset + length > source.size:
        raise asyncssh.SFTPFailure(f"copy-data: the source ends at {source.size}")
    end = offset + length
    while offset < end:
        data = await source.read(offset, min(CHUNK, end - offset))
        if not data:
            raise asyncssh.SFTPFailure(f"copy-data: the source ended at {offset}")
        try:
            await upload.write(target_offset, data)
        except StorageError as exc:
            await upload.abort(exc.detail)
            raise
        offset += len(data)
        target_offset += len(data)
