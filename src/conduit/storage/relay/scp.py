"""Relay to a legacy-SCP-only device: our own SCP client over an exec channel.

Uploads run ``scp -t -d <dir>`` and send one ``C`` line; downloads run
``scp -f -p <file>``. Every device path is built by the relay from validated
name components and passed through :func:`shlex.quote`; control lines are
parsed and formatted by the one strict codec, :mod:`conduit.scpcodec`, and
every name obeys :mod:`conduit.names`.

**Why uploads are spooled.** SCP announces the size in the ``C`` line before
the first data byte, but an SFTP client uploading through the gateway never
says how large its file is. The write handle therefore spools the upload to
an *unlinked* temp file in ``STATE_DIR/relay-spool`` (mode 0600, gone even if
the gateway crashes) and sends it at :meth:`commit`. Memory stays bounded by
one chunk; disk by the file (and ``spool_limit``). An OT engineer gets the
property that matters on a fragile device: nothing reaches the device unless
the whole file reached the gateway, and the device link is busy only for the
actual copy.

**Atomicity.** With a ``rename`` command configured the file lands under a
hidden temp name and is renamed after the custody check (``atomic = True``);
without one it is written under its final name (``atomic = False``: a cut
link can leave a partial file, which the audit must say).

Operations SCP has no verb for (listing, rename, delete, mkdir, rmdir) need a
fixed command template in the device's ``commands`` table, otherwise they are
``Fault.UNSUPPORTED``. ``set_times`` is unsupported.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import posixpath
import shlex
import stat as stat_module
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO

from conduit.errors import Fault, StorageError
from conduit.names import is_valid_name
from conduit.scpcodec import FileHeader, format_line
from conduit.storage.base import Entry, RelPath, Stat
from conduit.storage.relay import commands, custody
from conduit.storage.relay.connection import DeviceLink
from conduit.storage.relay.scpchannel import CHUNK, READ_WINDOW, ScpChannel, ScpSource
from conduit.storage.relay.sftp import remote_path, temp_name


class ScpReadHandle:
    """A sequential download; small reorderings are served from a window."""

    def __init__(self, device: ScpDevice, path: str, source: ScpSource) -> None:
        self._device = device
        self._path = path
        self._source: ScpSource | None = source
        self.size = source.line.size
        self._buf = bytearray()
        self._buf_start = 0
        self._lock = asyncio.Lock()
        self._closed = False

    async def read(self, offset: int, length: int) -> bytes:
        async with self._lock:
            if self._closed:
                raise StorageError(Fault.FAILURE, "file already closed")
            end = min(offset + length, self.size)
            if offset >= end:
                return b""
            if offset < self._buf_start or self._source is None:
                await self._restart()
            source = self._source
            assert source is not None
            pos = self._buf_start + len(self._buf)
            while pos < end:
                chunk = await source.read(CHUNK)
                if not chunk:
                    raise StorageError(Fault.FAILURE, "device file is shorter than announced")
                self._buf += chunk
                pos += len(chunk)
                keep_from = max(0, min(offset, pos - READ_WINDOW) - self._buf_start)
                if keep_from:
                    del self._buf[:keep_from]
                    self._buf_start += keep_from
            return bytes(self._buf[offset - self._buf_start : end - self._buf_start])

    async def _restart(self) -> None:
        if self._source is not None:
            self._source.close()
        self._source = None
        self._buf.clear()
        self._buf_start = 0
        source = await ScpSource.open(self._device.link, self._path)
        await source.begin()
        self._source = source

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._source is not None:
            self._source.close()
        self._device.link.release_slot()


class ScpWriteHandle:
    """An upload spooled on the gateway and sent to the device at commit."""

    def __init__(self, device: ScpDevice, path: RelPath, mode: int, spool: IO[bytes]) -> None:
        self._device = device
        self._dir = remote_path(device.root, path[:-1])
        self._name = path[-1]
        self._mode = mode & 0o7777
        self._spool: IO[bytes] | None = spool
        self._size = 0
        self._stream_sha256: Callable[[], str] | None = None
        self.atomic = "rename" in device.link.device.commands
        self.device_sha256: str | None = None
        self.local_sha256: str | None = None
        self.custody: custody.CustodyReceipt | None = None

    def hash_from(self, stream_sha256: Callable[[], str]) -> None:
        """Compare the device's hash with the caller's instead of hashing the spool.

        The gateway's transfer pipeline hashes every byte it writes here, once
        and in order; that hash is also the stronger one to compare with: a
        spool that changed on the gateway's disk shows as a mismatch. Only
        before the first write.
        """
        if self._size:
            raise StorageError(Fault.FAILURE, "upload hash source set too late")
        self._stream_sha256 = stream_sha256

    async def write(self, offset: int, data: bytes) -> None:
        spool = self._spool
        if spool is None:
            raise StorageError(Fault.FAILURE, "upload already finished")
        limit = self._device.spool_limit
        if limit is not None and offset + len(data) > limit:
            await self.abort()
            raise StorageError(Fault.NO_SPACE, "file too large for this device's spool")
        try:
            await asyncio.to_thread(os.pwrite, spool.fileno(), data, offset)
        except OSError as exc:
            await self.abort()
            fault = Fault.NO_SPACE if exc.errno in (errno.ENOSPC, errno.EDQUOT) else Fault.FAILURE
            raise StorageError(fault, detail=f"relay spool: {type(exc).__name__}") from None
        self._size = max(self._size, offset + len(data))

    async def _send(self, name: str) -> str:
        spool = self._spool
        assert spool is not None
        link = self._device.link
        digest = hashlib.sha256() if self._stream_sha256 is None else None
        channel = await ScpChannel.start(link, f"scp -t -d {shlex.quote(self._dir)}")
        try:
            await channel.expect_ok()
            await channel.send(format_line(FileHeader(False, self._mode, self._size, name)))
            await channel.expect_ok()
            offset = 0
            while offset < self._size:
                chunk = await asyncio.to_thread(
                    os.pread, spool.fileno(), min(CHUNK, self._size - offset), offset
                )
                if not chunk:  # sparse tail never written: zeros, as on local disk
                    chunk = bytes(min(CHUNK, self._size - offset))
                if digest is not None:
                    digest.update(chunk)
                await channel.send(chunk)
                offset += len(chunk)
            await channel.send(b"\0")
            await channel.expect_ok()
            channel.process.stdin.write_eof()
        except Exception as exc:
            raise channel.fail(exc, "upload") from None
        finally:
            channel.close()
        if digest is not None:
            return digest.hexdigest()
        assert self._stream_sha256 is not None
        return self._stream_sha256()

    async def commit(self) -> None:
        if self._spool is None:
            raise StorageError(Fault.FAILURE, "upload already finished")
        device = self._device
        link = device.link
        landed = temp_name() if self.atomic else self._name
        landed_path = posixpath.join(self._dir, landed)
        final_path = posixpath.join(self._dir, self._name)
        try:
            async with link.slot():
                local = await self._send(landed)
            self.local_sha256 = local
            receipt = await custody.verify(
                link, landed_path, local, lambda: device.read_back(landed_path)
            )
            if self.atomic:
                await commands.run(link, "rename", old=landed_path, new=final_path)
        except StorageError:
            await self._cleanup(landed_path)
            raise
        finally:
            await self.abort()
        self.custody = receipt
        self.device_sha256 = receipt.device_sha256

    async def _cleanup(self, landed_path: str) -> None:
        # Only with a delete command: a temp name is hidden and harmless, a
        # non-atomic final name is left for the audit to report as partial.
        if "delete" in self._device.link.device.commands:
            with contextlib.suppress(StorageError):
                await commands.run(self._device.link, "delete", path=landed_path)

    async def abort(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()


class ScpDevice:
    """The legacy-SCP implementation behind :class:`~conduit.storage.relay.RelayBackend`."""

    def __init__(
        self, link: DeviceLink, root: str, spool_dir: Path, spool_limit: int | None = None
    ) -> None:
        self.link = link
        self.root = root
        self.spool_dir = spool_dir
        self.spool_limit = spool_limit

    def path(self, path: RelPath) -> str:
        return remote_path(self.root, path)

    async def read_back(self, path: str) -> AsyncIterator[bytes]:
        async with self.link.slot():
            source = await ScpSource.open(self.link, path)
            try:
                async for chunk in source.chunks():
                    yield chunk
            finally:
                source.close()

    async def _is_dir(self, path: str) -> bool:
        """Probe with ``scp -t -d``: the sink checks the folder, writes nothing."""
        channel = await ScpChannel.start(self.link, f"scp -t -d {shlex.quote(path)}")
        try:
            await channel.expect_ok()
            return True
        except StorageError:
            return False
        except Exception as exc:
            raise channel.fail(exc, "probe") from None
        finally:
            channel.close()

    async def stat(self, path: RelPath) -> Stat:
        remote = self.path(path)
        if not path:
            return Stat(0, stat_module.S_IFDIR | 0o755, 0.0, 0.0)
        async with self.link.slot():
            try:
                source = await ScpSource.open(self.link, remote)
            except StorageError as exc:
                if exc.fault is Fault.IS_A_DIRECTORY and await self._is_dir(remote):
                    return Stat(0, stat_module.S_IFDIR | 0o755, 0.0, 0.0)
                if exc.fault is Fault.IS_A_DIRECTORY:
                    raise StorageError(Fault.UNSUPPORTED, "not supported by this device") from None
                raise
            source.close()
        return source.stat()

    async def listdir(self, path: RelPath) -> list[Entry]:
        output = await commands.run(self.link, "list", path=self.path(path))
        return parse_listing(output)

    async def open_read(self, path: RelPath) -> ScpReadHandle:
        remote = self.path(path)
        await self.link.acquire_slot()
        try:
            source = await ScpSource.open(self.link, remote)
            await source.begin()
        except BaseException:
            self.link.release_slot()
            raise
        return ScpReadHandle(self, remote, source)

    async def open_write(self, path: RelPath, *, mode: int = 0o644) -> ScpWriteHandle:
        if not path:
            raise StorageError(Fault.IS_A_DIRECTORY)
        self.path(path)
        try:
            self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            spool = tempfile.TemporaryFile(dir=self.spool_dir)  # noqa: SIM115 - unlinked at once, owned by the handle
        except OSError as exc:
            raise StorageError(
                Fault.UNAVAILABLE, "relay spool unavailable", f"spool: {type(exc).__name__}"
            ) from None
        return ScpWriteHandle(self, path, mode, spool)

    async def mkdir(self, path: RelPath, *, mode: int = 0o755) -> None:
        await commands.run(self.link, "mkdir", path=self.path(path))

    async def rmdir(self, path: RelPath) -> None:
        if not path:
            raise StorageError(Fault.FORBIDDEN, "cannot remove the device root")
        await commands.run(self.link, "rmdir", path=self.path(path))

    async def remove(self, path: RelPath) -> None:
        await commands.run(self.link, "delete", path=self.path(path))

    async def rename(self, old: RelPath, new: RelPath, *, overwrite: bool) -> None:
        if "rename" not in self.link.device.commands:
            raise StorageError(Fault.UNSUPPORTED, "not supported by this device")
        if not old or not new:
            raise StorageError(Fault.FORBIDDEN, "cannot rename the device root")
        if not overwrite:
            try:
                await self.stat(new)
            except StorageError as exc:
                if exc.fault is not Fault.NOT_FOUND:
                    raise
            else:
                raise StorageError(Fault.EXISTS)
        await commands.run(self.link, "rename", old=self.path(old), new=self.path(new))

    async def set_times(self, path: RelPath, atime: float, mtime: float) -> None:
        raise StorageError(Fault.UNSUPPORTED, "not supported by this device")


def parse_listing(output: bytes) -> list[Entry]:
    """Entries from a ``list`` command printing ``TYPE SIZE MTIME NAME\\0`` each.

    ``TYPE`` is ``f``, ``d`` or ``l`` (as GNU find's ``%y``), e.g.
    ``find {path} -mindepth 1 -maxdepth 1 -printf '%y %s %T@ %f\\0'``.
    """
    kinds = {"f": stat_module.S_IFREG, "d": stat_module.S_IFDIR, "l": stat_module.S_IFLNK}
    entries = []
    for record in output.split(b"\0"):
        if not record.strip():
            continue
        try:
            kind, size, mtime, name = record.decode("utf-8", "surrogateescape").split(" ", 3)
            entry = Entry(
                name,
                Stat(int(size), kinds.get(kind, 0) | 0o644, float(mtime), float(mtime)),
            )
        except ValueError:
            raise StorageError(
                Fault.FAILURE, "device listing unreadable", "list command output malformed"
            ) from None
        if is_valid_name(name):  # what no operation could reach is not shown
            entries.append(entry)
    return sorted(entries, key=lambda entry: entry.name)
