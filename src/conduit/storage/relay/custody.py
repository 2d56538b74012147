"""Chain of custody: prove that what landed on the device is what was sent.

Every byte on its way to the device is hashed once: by the gateway's
transfer pipeline, which lends its hash to the handle (``hash_from``), or,
when the relay is used on its own, by the relay (:class:`OrderedHasher`, or
while sending the spool for legacy SCP). After the upload, before the file
gets its final name where the protocol allows, the device's copy is hashed
*on the device side*: by the device's configured ``sha256`` command if it has
one (``sha256sum -- {path}``; only the first 64 hex digits of its output are
read), otherwise by reading the file back over the same protocol (hashed on a
worker thread, :mod:`~conduit.storage.relay.hashing`; over SFTP the read-back
runs beside the upload, :mod:`~conduit.storage.relay.readback`). Both hashes
go into a :class:`CustodyReceipt`; a mismatch is a
``StorageError(Fault.FAILURE, "device copy does not match")``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from conduit.errors import Fault, StorageError
from conduit.storage.relay import commands
from conduit.storage.relay.connection import DeviceLink
from conduit.storage.relay.readback import read_back_sha256

REORDER_WINDOW = 16 * 1024 * 1024
"""Bytes of out-of-order writes held for hashing before an upload is refused."""

_HEX64 = re.compile(rb"\\?([0-9a-fA-F]{64})(?![0-9a-fA-F])")

Method = Literal["command", "read-back"]


@dataclass(frozen=True, slots=True)
class CustodyReceipt:
    """Both hashes of one relayed upload and how the device's was obtained."""

    local_sha256: str
    device_sha256: str
    method: Method


class OrderedHasher:
    """SHA-256 of a stream written at offsets, tolerating small reordering.

    SFTP clients keep many writes in flight, so they may reach the relay
    slightly out of order. Early chunks wait (up to ``window`` bytes) until
    the gap before them is filled; rewriting bytes already hashed is refused,
    since the hash could no longer describe the file.
    """

    def __init__(self, window: int = REORDER_WINDOW) -> None:
        self._hash = hashlib.sha256()
        self._pending: dict[int, bytes] = {}
        self._pending_bytes = 0
        self._window = window
        self.position = 0

    def feed(self, offset: int, data: bytes) -> None:
        if not data:
            return
        if offset < self.position or offset in self._pending:
            raise StorageError(
                Fault.FAILURE,
                "rewriting part of an upload is not supported for devices",
                f"write at {offset} overlaps bytes already sent",
            )
        if offset > self.position:
            self._pending[offset] = data
            self._pending_bytes += len(data)
            if self._pending_bytes > self._window:
                raise StorageError(
                    Fault.FAILURE,
                    "upload arrived too far out of order",
                    f"more than {self._window} bytes ahead of offset {self.position}",
                )
            return
        self._hash.update(data)
        self.position += len(data)
        while self.position in self._pending:
            chunk = self._pending.pop(self.position)
            self._pending_bytes -= len(chunk)
            self._hash.update(chunk)
            self.position += len(chunk)

    def hexdigest(self) -> str:
        if self._pending:
            raise StorageError(
                Fault.FAILURE,
                "upload has a gap or overlapping writes",
                f"bytes after offset {self.position} never joined the stream",
            )
        return self._hash.hexdigest()


def parse_sha256_output(output: bytes) -> str:
    """The digest from ``sha256sum``-style output (first 64 hex digits)."""
    match = _HEX64.match(output.lstrip())
    if match is None:
        raise StorageError(
            Fault.FAILURE,
            "device hash unreadable",
            "the device's sha256 command printed no SHA-256 digest",
        )
    return match.group(1).decode().lower()


def compare(local_sha256: str, device_sha256: str, method: Method) -> CustodyReceipt:
    """A receipt if both hashes agree, else the mismatch error."""
    if local_sha256 != device_sha256:
        raise StorageError(
            Fault.FAILURE,
            "device copy does not match",
            f"sent sha256 {local_sha256}, device has {device_sha256} ({method})",
        )
    return CustodyReceipt(local_sha256, device_sha256, method)


async def verify(
    link: DeviceLink,
    remote_path: str,
    local_sha256: str,
    read_back: Callable[[], AsyncIterator[bytes]],
) -> CustodyReceipt:
    """Hash ``remote_path`` on the device and compare it with ``local_sha256``."""
    method: Method
    if "sha256" in link.device.commands:
        output = await commands.run(link, "sha256", path=remote_path)
        device_sha256, method = parse_sha256_output(output), "command"
    else:
        device_sha256, method = await read_back_sha256(read_back), "read-back"
    return compare(local_sha256, device_sha256, method)
