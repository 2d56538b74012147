"""What both protocols share: the result of one file, progress, the bandwidth cap,
and the local rule "nothing partial under a final name".

A download is written to ``.NAME.conduit-part`` beside its target and renamed
over the target only once every byte arrived, was hashed and (with
``verify``) matched the far side's read-back. The partial's name is fixed, so
an interrupted download can be continued with ``resume``; it starts with a
dot, so it does not show in an ``ls``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
"""Bytes per read/write request batch (asyncssh splits and pipelines it)."""

PART_SUFFIX = ".conduit-part"

FarHash = Callable[[str], Awaitable[str]]
"""The far side's SHA-256 of a path, computed there (``sha256sum``) instead of read back."""

Progress = Callable[[str, int, int], None]
"""Called as ``progress(name, bytes_done, bytes_total)`` after each chunk of a file."""


class LocalFault(OSError):
    """An error of the local disk (full, read-only, no permission), not of the link.

    Both are ``OSError``s (a reset connection is ``ConnectionResetError``); a
    download keeps its partial for ``resume`` after a link fault only.
    """

    @classmethod
    def of(cls, exc: OSError) -> LocalFault:
        return cls(exc.errno or 0, exc.strerror or type(exc).__name__, exc.filename)


@dataclass(frozen=True)
class Transfer:
    """One file copied: what, where, how many bytes, their SHA-256."""

    source: str
    destination: str
    bytes: int
    sha256: str
    seconds: float
    protocol: str
    verified: bool = False
    """The far side's copy was read back and hashed to the same value."""
    resumed_from: int = 0
    """Bytes kept from a local partial (``resume``), not sent again."""


def partial_path(target: Path) -> Path:
    """The hidden name a download is written under until it is complete."""
    return target.with_name(f".{target.name}{PART_SUFFIX}")


def temp_name(remote: str) -> str:
    """The hidden far name an upload is written under until it is renamed."""
    folder, name = posixpath.split(remote)
    return posixpath.join(folder, f".{name}.conduit-{secrets.token_hex(4)}.part")


def hash_file(path: Path, limit: int | None = None) -> tuple[hashlib._Hash, int]:
    """SHA-256 of ``path`` (its first ``limit`` bytes); returns the hash object and the count."""
    digest = hashlib.sha256()
    count = 0
    with path.open("rb") as handle:
        while limit is None or count < limit:
            want = CHUNK if limit is None else min(CHUNK, limit - count)
            block = handle.read(want)
            if not block:
                break
            digest.update(block)
            count += len(block)
    return digest, count


def fsync_replace(partial: Path, target: Path) -> None:
    """Make ``partial`` durable, then give it the final name (one rename)."""
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, target)


class Throttle:
    """A bandwidth cap in kbit/s, like ``scp -l``: waits so the average stays below it."""

    def __init__(self, kbit_per_s: float | None) -> None:
        self.rate = kbit_per_s * 1000 / 8 if kbit_per_s else None
        self.start = time.monotonic()
        self.sent = 0

    async def take(self, count: int) -> None:
        if self.rate is None:
            return
        self.sent += count
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            await asyncio.sleep(ahead)
