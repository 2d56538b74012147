"""The legacy SCP wire session on a device: one ``scp`` exec channel and its replies.

:class:`ScpChannel` owns the reply discipline (``\\0`` OK, ``\\1``/``\\2`` errors,
timeouts, mapping device messages to faults); :class:`ScpSource` reads one file
from ``scp -f``. :mod:`conduit.storage.relay.scp` builds uploads, downloads
and the device backend on top of them.
"""

from __future__ import annotations

import asyncio
import shlex
import stat as stat_module
from collections.abc import AsyncIterator

import asyncssh

from conduit.errors import Fault, StorageError
from conduit.scpcodec import (
    LINE_END,
    MAX_LINE,
    FileHeader,
    PeerError,
    ScpProtocolError,
    Times,
    parse_line,
    parse_reply,
)
from conduit.storage.base import Stat
from conduit.storage.relay.connection import DeviceLink, device_error

CHUNK = 256 * 1024
READ_WINDOW = 8 * 1024 * 1024
"""Bytes of a download kept behind the newest read, for reordered requests."""
REPLY_TIMEOUT = 120.0

_REMOTE_FAULTS = (
    ("no such file", Fault.NOT_FOUND),
    ("permission denied", Fault.FORBIDDEN),
    ("not a regular file", Fault.IS_A_DIRECTORY),
    ("is a directory", Fault.IS_A_DIRECTORY),
    ("not a directory", Fault.NOT_A_DIRECTORY),
    ("no space", Fault.NO_SPACE),
)

_Process = asyncssh.SSHClientProcess[bytes]


def _remote_fault(message: str) -> StorageError:
    lowered = message.lower()
    for needle, fault in _REMOTE_FAULTS:
        if needle in lowered:
            return StorageError(fault, detail=f"device scp: {fault.value}")
    return StorageError(Fault.FAILURE, "device refused the transfer", "device scp error")


class ScpChannel:
    """One ``scp`` process on the device and the reply discipline around it."""

    def __init__(self, link: DeviceLink, process: _Process) -> None:
        self.link = link
        self.process = process

    @classmethod
    async def start(cls, link: DeviceLink, command: str) -> ScpChannel:
        conn = await link.connection()
        try:
            async with asyncio.timeout(link.device.connect_timeout):
                process = await conn.create_process(command, encoding=None, stderr=asyncssh.DEVNULL)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            link.broken()
            raise device_error(link.name, exc, "start scp") from None
        return cls(link, process)

    def fail(self, exc: BaseException, action: str) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, ScpProtocolError):
            return StorageError(
                Fault.FAILURE, "device spoke invalid SCP", f"device {self.link.name}: {exc}"
            )
        if isinstance(exc, asyncio.IncompleteReadError):
            return StorageError(
                Fault.UNAVAILABLE,
                "device unavailable",
                f"device {self.link.name}: {action}: channel closed",
            )
        error = device_error(self.link.name, exc, action)
        if error.fault is Fault.UNAVAILABLE:
            self.link.broken()
        return error

    async def _read_line(self, first: bytes) -> bytes:
        async with asyncio.timeout(REPLY_TIMEOUT):
            rest = await self.process.stdout.readuntil(LINE_END, MAX_LINE + 1)
        if not rest.endswith(b"\n"):
            raise ScpProtocolError("protocol error: control line too long")
        return first + rest

    async def expect_ok(self) -> None:
        async with asyncio.timeout(REPLY_TIMEOUT):
            first = await self.process.stdout.readexactly(1)
        if first == b"\0":
            return
        if first not in (b"\1", b"\2"):
            raise ScpProtocolError("protocol error: unexpected reply byte")
        reply = parse_reply(await self._read_line(first))
        raise _remote_fault(reply.message if reply else "")

    async def next_line(self) -> FileHeader | Times:
        """The source's next control line (an error reply becomes a StorageError)."""
        async with asyncio.timeout(REPLY_TIMEOUT):
            first = await self.process.stdout.readexactly(1)
        line = parse_line(await self._read_line(first))
        if isinstance(line, PeerError):
            raise _remote_fault(line.message)
        if not isinstance(line, FileHeader | Times):
            raise ScpProtocolError("unexpected end of directory")
        return line

    async def send(self, data: bytes) -> None:
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    def close(self) -> None:
        self.process.close()


class ScpSource:
    """A running ``scp -f -p`` download, positioned at the start of the data."""

    def __init__(self, channel: ScpChannel, line: FileHeader, times: Times | None) -> None:
        self.channel = channel
        self.line = line
        self.times = times
        self.remaining = line.size

    @classmethod
    async def open(cls, link: DeviceLink, path: str) -> ScpSource:
        channel = await ScpChannel.start(link, f"scp -f -p {shlex.quote(path)}")
        try:
            await channel.send(b"\0")
            times = None
            while True:
                line = await channel.next_line()
                if isinstance(line, Times):
                    times = line
                    await channel.send(b"\0")
                    continue
                if line.directory:
                    raise StorageError(Fault.IS_A_DIRECTORY)
                return cls(channel, line, times)
        except BaseException as exc:
            channel.close()
            if isinstance(exc, Exception):
                raise channel.fail(exc, "open download") from None
            raise

    def stat(self) -> Stat:
        mtime = float(self.times.mtime) if self.times else 0.0
        atime = float(self.times.atime) if self.times else mtime
        return Stat(self.line.size, stat_module.S_IFREG | self.line.mode, mtime, atime)

    async def begin(self) -> None:
        await self.channel.send(b"\0")

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the file; b"" once all of it was read."""
        if self.remaining == 0:
            return b""
        try:
            # asyncio.timeout, not wait_for: wait_for's per-call task keeps
            # each chunk alive in a reference cycle until the GC runs.
            async with asyncio.timeout(REPLY_TIMEOUT):
                data = await self.channel.process.stdout.read(min(limit, self.remaining))
            if not data:
                raise asyncio.IncompleteReadError(b"", self.remaining)
            self.remaining -= len(data)
            if self.remaining == 0:
                await self.channel.expect_ok()  # the source's own status
                await self.channel.send(b"\0")
        except Exception as exc:
            self.close()
            raise self.channel.fail(exc, "download") from None
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        await self.begin()
        while chunk := await self.read(CHUNK):
            yield chunk

    def close(self) -> None:
        self.channel.close()
