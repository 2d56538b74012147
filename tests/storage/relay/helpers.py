from __future__ import annotations

import hashlib
from pathlib import Path

from conduit.storage.base import RelPath
from conduit.storage.relay import RelayBackend, RelayWriteHandle


async def upload(
    backend: RelayBackend, path: RelPath, data: bytes, chunk: int = 64 * 1024
) -> RelayWriteHandle:
    handle = await backend.open_write(path)
    for offset in range(0, len(data), chunk):
        await handle.write(offset, data[offset : offset + chunk])
    await handle.commit()
    return handle


async def download(backend: RelayBackend, path: RelPath, chunk: int = 32 * 1024) -> bytes:
    handle = await backend.open_read(path)
    try:
        parts = []
        offset = 0
        while offset < handle.size:
            data = await handle.read(offset, chunk)
            if not data:
                break
            parts.append(data)
            offset += len(data)
        return b"".join(parts)
    finally:
        await handle.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def disk_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
