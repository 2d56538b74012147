"""Relay to a device over SFTP: every operation, uploads atomic.

An upload streams to a hidden temp name next to the target
(``.conduit-<random>.part``): small writes are joined into 255 KiB ones and a
few of them travel at once (:mod:`~conduit.storage.relay.blocks`), so memory
stays bounded whatever the file size. Downloads and the read-back for custody
read ahead the same way.
On commit the temp file is closed, its device-side hash checked
(:mod:`~conduit.storage.relay.custody`) and only then renamed over the final
name with the ``posix-rename@openssh.com`` extension (atomic, overwrites); a
server without it gets a plain SFTP rename, removing an existing target
first, and the handle then reports ``atomic = False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import secrets
import stat as stat_module
from collections.abc import AsyncIterator, Callable

import asyncssh

from conduit.errors import Fault, StorageError
from conduit.names import BadName, check_path
from conduit.storage.base import Entry, RelPath, Stat
from conduit.storage.relay import custody
from conduit.storage.relay.blocks import (
    READ_DEPTH,
    BlockReader,
    WriteGather,
    depth,
    in_slot,
    open_args,
    read_exactly,
)
from conduit.storage.relay.connection import DeviceLink, DeviceOps
from conduit.storage.relay.readback import WrittenPrefix, read_back_sha256
from conduit.storage.relay.sftpread import SftpReadHandle


def temp_name() -> str:
    """A hidden, unguessable name for an upload in progress on the device."""
    return f".conduit-{secrets.token_hex(8)}.part"


def remote_path(root: str, path: RelPath) -> str:
    """The device path of ``path`` below the device's ``root``; every name obeys the rule."""
    try:
        check_path(path)
    except BadName as exc:
        raise StorageError(Fault.FORBIDDEN, f"name not allowed: {exc}") from None
    return posixpath.join(root, *path) if path else root


def _stat(attrs: asyncssh.SFTPAttrs) -> Stat:
    mode = attrs.permissions or 0
    if not stat_module.S_IFMT(mode) and attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
        mode |= stat_module.S_IFDIR
    return Stat(
        size=attrs.size or 0,
        mode=mode,
        mtime=float(attrs.mtime or 0),
        atime=float(attrs.atime or attrs.mtime or 0),
    )


# Device writes travelling at once per upload (x 255 KiB: memory per upload).
MAX_WRITES_IN_FLIGHT = 8


class SftpWriteHandle(DeviceOps):
    """An upload to the device; see the module docstring for the sequence."""

    def __init__(
        self,
        link: DeviceLink,
        sftp: asyncssh.SFTPClient,
        file: asyncssh.SFTPClientFile,
        temp: str,
        final: str,
    ) -> None:
        super().__init__(link)
        self._sftp = sftp
        self._file: asyncssh.SFTPClientFile | None = file
        self._temp = temp
        self._final = final
        self._hasher: custody.OrderedHasher | None = custody.OrderedHasher()
        self._stream_sha256: Callable[[], str] | None = None
        self._gather = WriteGather()
        # Read-back custody (no device sha256 command) runs beside the upload
        # from the first write on (readback.py); None: not (yet) started.
        self._prefix = WrittenPrefix()
        self._read_back_digest: asyncio.Task[str] | None = None
        self._in_flight: set[asyncio.Future[None]] = set()
        self._done = False
        self.atomic = True
        self.device_sha256: str | None = None
        self.local_sha256: str | None = None
        self.custody: custody.CustodyReceipt | None = None

    def hash_from(self, stream_sha256: Callable[[], str]) -> None:
        """Take the upload's SHA-256 from the caller instead of hashing again.

        The gateway's transfer pipeline hashes every byte it hands to
        :meth:`write`, once and in order, for its own record; a second hash
        here cost a whole SHA-256 pass of the gateway's CPU per upload. The
        custody check compares the device's hash with ``stream_sha256()``,
        called at commit. Only before the first write.
        """
        if self._hasher is None or self._hasher.position or self._gather.pending:
            raise StorageError(Fault.FAILURE, "upload hash source set too late")
        self._hasher, self._stream_sha256 = None, stream_sha256

    async def write(self, offset: int, data: bytes) -> None:
        """Send bytes to the device without waiting for its reply.

        Awaiting each device write before taking the client's next chunk
        made an upload one round trip per chunk; instead consecutive writes
        are joined into 255 KiB blocks and a few of them travel at once
        (``depth``); memory stays bounded by that count times the block size.
        Their results are collected here as room is needed, and all of them
        at commit.
        """
        if self._file is None or self._done:
            raise StorageError(Fault.FAILURE, "upload already finished")
        try:
            if self._hasher is not None:
                self._hasher.feed(offset, data)
            for block_offset, block in self._gather.add(offset, data):
                await self._start_write(self._file, block_offset, block)
        except StorageError:
            await self.abort()
            raise
        except (OSError, asyncssh.Error) as exc:
            error = self.fail(exc, "write")
            await self.abort()
            raise error from None

    async def _start_write(self, file: asyncssh.SFTPClientFile, offset: int, data: bytes) -> None:
        if len(self._in_flight) >= depth(self.link, MAX_WRITES_IN_FLIGHT):
            await self._settle(all_of_them=False)
        write = asyncio.ensure_future(self._send(file, offset, data))
        self._in_flight.add(write)
        self._prefix.issued(write, offset, offset + len(data))
        if self._read_back_digest is None and "sha256" not in self.link.device.commands:
            self._read_back_digest = asyncio.ensure_future(read_back_sha256(self._read_back))

    async def _send(self, file: asyncssh.SFTPClientFile, offset: int, data: bytes) -> None:
        await in_slot(self.link, lambda: file.write(data, offset))

    async def _settle(self, *, all_of_them: bool) -> None:
        """Wait for one (or every) write in flight; the first failure is raised."""
        if not self._in_flight:
            return
        done, self._in_flight = await asyncio.wait(
            self._in_flight,
            return_when=asyncio.ALL_COMPLETED if all_of_them else asyncio.FIRST_COMPLETED,
        )
        for task in done:
            task.result()

    async def _read_back(self) -> AsyncIterator[bytes]:
        """The device's copy, block by block, each once the device answered its writes."""
        async with self.link.slot():
            file = await self._sftp.open(self._temp, "rb", encoding=None, **open_args(self._sftp))
        prefix, link = self._prefix, self.link

        async def fetch(offset: int, length: int) -> bytes:
            end = await prefix.reached(offset + length)
            return await in_slot(link, lambda: read_exactly(file, offset, length, end))

        try:
            reader = BlockReader(fetch, depth=depth(self.link, READ_DEPTH))
            try:
                while block := await reader.next():
                    yield block
            finally:
                await reader.close()
        finally:
            # in a slot: reads given up on may still be in flight on the device
            await in_slot(link, file.close)

    async def commit(self) -> None:
        if self._file is None or self._done:
            raise StorageError(Fault.FAILURE, "upload already finished")
        try:
            for block_offset, block in self._gather.flush():
                await self._start_write(self._file, block_offset, block)
            await self._settle(all_of_them=True)
            local = self._local_sha256()
            file, self._file = self._file, None
            await in_slot(self.link, file.close)  # the read-back's reads may be in flight
            self._prefix.finish(self._prefix.sent)
            if self._read_back_digest is not None:
                device = await self._read_back_digest
                receipt = custody.compare(local, device, "read-back")
            else:
                receipt = await custody.verify(self.link, self._temp, local, self._read_back)
            await self._rename_into_place()
        except StorageError:
            await self.abort()
            raise
        except (OSError, asyncssh.Error) as exc:
            error = self.fail(exc, "commit")
            await self.abort()
            raise error from None
        self._done = True
        self.custody = receipt
        self.local_sha256 = receipt.local_sha256
        self.device_sha256 = receipt.device_sha256

    def _local_sha256(self) -> str:
        if self._hasher is not None:
            return self._hasher.hexdigest()
        assert self._stream_sha256 is not None
        return self._stream_sha256()

    async def _rename_into_place(self) -> None:
        async with self.link.slot():
            try:
                await self._sftp.posix_rename(self._temp, self._final)
                return
            except asyncssh.SFTPOpUnsupported:
                pass
            # No atomic overwrite on this server: a reader may briefly see no file.
            self.atomic = False
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await self._sftp.remove(self._final)
            await self._sftp.rename(self._temp, self._final)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        for task in self._in_flight:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._in_flight = set()
        reading, self._read_back_digest = self._read_back_digest, None
        if reading is not None:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading  # its read handle is closed before the temp file goes
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError, asyncssh.Error):
                await in_slot(self.link, file.close)
        try:
            await self._sftp.remove(self._temp)
            return
        except asyncssh.SFTPNoSuchFile:
            return
        except (OSError, asyncssh.Error):
            pass
        # The session died with the transfer: one fresh try (bounded by
        # connect_timeout). If the device stays away the hidden temp file
        # remains there; the final name is never touched.
        with contextlib.suppress(OSError, asyncssh.Error, StorageError):
            sftp = await self.link.sftp()
            await sftp.remove(self._temp)


class SftpDevice(DeviceOps):
    """The SFTP implementation behind :class:`~conduit.storage.relay.RelayBackend`."""

    def __init__(self, link: DeviceLink, root: str) -> None:
        super().__init__(link)
        self.root = root

    def path(self, path: RelPath) -> str:
        return remote_path(self.root, path)

    async def stat(self, path: RelPath) -> Stat:
        sftp = await self.link.sftp()
        try:
            async with self.link.slot():
                return _stat(await sftp.stat(self.path(path)))
        except (OSError, asyncssh.Error) as exc:
            raise self.fail(exc, "stat") from None

    async def listdir(self, path: RelPath) -> list[Entry]:
        sftp = await self.link.sftp()
        try:
            async with self.link.slot():
                names = await sftp.readdir(self.path(path))
        except (OSError, asyncssh.Error) as exc:
            raise self.fail(exc, "list") from None
        entries = []
        for item in names:
            name = item.filename
            if not isinstance(name, str) or name in (".", ".."):
                continue
            entries.append(Entry(name, _stat(item.attrs)))
        return sorted(entries, key=lambda entry: entry.name)

    async def open_read(self, path: RelPath) -> SftpReadHandle:
        sftp = await self.link.sftp()
        try:
            async with self.link.slot():
                file = await sftp.open(self.path(path), "rb", encoding=None, **open_args(sftp))
                attrs = await file.stat()
        except (OSError, asyncssh.Error) as exc:
            raise self.fail(exc, "open") from None
        if attrs.permissions is not None and stat_module.S_ISDIR(attrs.permissions):
            await file.close()
            raise StorageError(Fault.IS_A_DIRECTORY)
        return SftpReadHandle(self.link, file, attrs.size or 0)

    async def open_write(self, path: RelPath, *, mode: int = 0o644) -> SftpWriteHandle:
        if not path:
            raise StorageError(Fault.IS_A_DIRECTORY)
        sftp = await self.link.sftp()
        final = self.path(path)
        temp = posixpath.join(posixpath.dirname(final), temp_name())
        flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
        try:
            async with self.link.slot():
                file = await sftp.open(
                    temp,
                    flags,
                    asyncssh.SFTPAttrs(permissions=mode & 0o7777),
                    encoding=None,
                    **open_args(sftp),
                )
        except (OSError, asyncssh.Error) as exc:
            raise self.fail(exc, "open for upload") from None
        return SftpWriteHandle(self.link, sftp, file, temp, final)

    async def mkdir(self, path: RelPath, *, mode: int = 0o755) -> None:
        sftp = await self.link.sftp()
        try:
            async with self.link.slot():
                await sftp.mkdir(self.path(path), asyncssh.SFTPAttrs(permissions=mode & 0o7777))
        except asyncssh.SFTPFailure:
            # OpenSSH's sftp-server answers a plain failure for EEXIST.
            if await self._exists(path):
                raise StorageError(Fault.EXISTS) from None
            raise StorageError(Fault.FAILURE, "device could not create the folder") from None
        except (OSError, asyncssh.Error) as exc:
            raise self.fail(exc, "mkdir") from None

    async def rmdir(self, path: RelPath) -> None:
        if not path:
            raise StorageError(Fault.FORBIDDEN, "cannot remove the device root")
        sftp = await self.link.sftp()
        try:
            async with self.link.slot():
                await sftp.rmdir(self.path(path))
        except asyncssh.SFTPFailure:
            if await self.listdir(path):
                raise StorageError(Fault.NOT_EMPTY) from None
            raise StorageError(Fault.FAILURE, "device could not remove the folder") from None
        except (OSError, asyncssh.Error) as exc:
            raise self.fail(exc, "rmdir") from None

    async def remove(self, path: RelPath) -> None:
        sftp = await self.link.sftp()
        try:
            async with self.link.slot():
                await sftp.remove(self.path(path))
        except (OSError, asyncssh.Error) as exc:
            raise self.fail(exc, "remove") from None

    async def _exists(self, path: RelPath) -> bool:
        try:
            await self.stat(path)
        except StorageError as exc:
            if exc.fault is Fault.NOT_FOUND:
                return False
            raise
        return True

    async def rename(self, old: RelPath, new: RelPath, *, overwrite: bool) -> None:
        if not old or not new:
            raise StorageError(Fault.FORBIDDEN, "cannot rename the device root")
        sftp = await self.link.sftp()
        if not overwrite and await self._exists(new):
            raise StorageError(Fault.EXISTS)
        try:
            async with self.link.slot():
                if overwrite:
                    try:
                        await sftp.posix_rename(self.path(old), self.path(new))
                        return
                    except asyncssh.SFTPOpUnsupported:
                        pass
                await sftp.rename(self.path(old), self.path(new))
        except (OSError, asyncssh.Error) as exc:
            raise self.fail(exc, "rename") from None

    async def set_times(self, path: RelPath, atime: float, mtime: float) -> None:
        sftp = await self.link.sftp()
        try:
            async with self.link.slot():
                await sftp.utime(self.path(path), (atime, mtime))
        except (OSError, asyncssh.Error) as exc:
            raise self.fail(exc, "set times") from None
