"""The SFTP v3 server: wire requests in, :class:`Operations` calls out.

asyncssh parses the protocol; this module narrows what it offers (no links,
256 KiB messages, bounded replies in flight; ``copy-data`` and
``check-file-handle`` are Conduit's own, :mod:`conduit.gateway.sftpext`) and makes an
upload that was never explicitly closed, because the client died or the
channel dropped, an *abort* rather than a commit. Open handles count against
the session's and the user's caps (:mod:`conduit.gateway.resources`), and
listings are read a page at a time (:mod:`conduit.gateway.listing`). What
needs asyncssh's private API is in :mod:`conduit._asyncssh.sftpserver`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncssh
from asyncssh import FXF_APPEND, FXF_CREAT, FXF_EXCL, FXF_READ, FXF_WRITE

from conduit._asyncssh.sftpserver import NarrowSFTPHandler
from conduit.errors import Fault, StorageError
from conduit.gateway import sftpext
from conduit.gateway.listing import Listing, open_listing
from conduit.gateway.listing import attrs as _attrs
from conduit.gateway.operations import Operations
from conduit.gateway.resources import HandleQuota
from conduit.gateway.vfs import VirtualPath
from conduit.transfer import Download, Upload

# OpenSSH's own limits (SFTP_MAX_MSG_LENGTH): OpenSSH clients size their
# reads and writes from what we advertise here.
MAX_MESSAGE = 256 * 1024
MAX_DATA = MAX_MESSAGE - 1024
# Replies queued on the channel beyond this make the next read wait for the
# client to drain them: memory per session stays bounded.
MAX_QUEUED_REPLIES = 4 * 1024 * 1024

_FAULT_ERRORS: dict[Fault, Callable[[str], asyncssh.SFTPError]] = {
    Fault.NOT_FOUND: asyncssh.SFTPNoSuchFile,
    Fault.FORBIDDEN: asyncssh.SFTPPermissionDenied,
    Fault.UNSUPPORTED: asyncssh.SFTPOpUnsupported,
}

T = TypeVar("T")


def sftp_error(exc: StorageError) -> asyncssh.SFTPError:
    # A device the relay could not reach says which status fits best
    # (no connection, connection lost, permission denied): see relay/failures.py.
    status = getattr(exc, "sftp_status", None)
    if isinstance(status, int):
        return asyncssh.SFTPError(status, exc.reason)
    return _FAULT_ERRORS.get(exc.fault, asyncssh.SFTPFailure)(exc.reason)


async def _guard(call: Coroutine[Any, Any, T]) -> T:
    try:
        return await call
    except StorageError as exc:
        raise sftp_error(exc) from None


class _Writing:
    """An open upload plus the times ``fsetstat`` asked for (set after commit)."""

    def __init__(self, upload: Upload, path: VirtualPath) -> None:
        self.upload = upload
        self.path = path
        self.times: tuple[float, float] | None = None


class GatewaySFTPServer(asyncssh.SFTPServer):
    """One per SFTP (or SCP) session; every method goes through ``ops``."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[bytes],
        ops: Operations,
        drain: Callable[[], Coroutine[Any, Any, None]] | None = None,
        quota: HandleQuota | None = None,
    ) -> None:
        super().__init__(chan)
        self.ops = ops
        self.aborting: str | None = None
        self._drain = drain
        self.quota = quota

    async def acquire(self, what: str, path: bytes) -> None:
        """Count one more open handle, or refuse it (and record why)."""
        reason = self.quota.acquire() if self.quota is not None else None
        if reason is not None:
            await _guard(self.ops.refuse(what, path.decode("utf-8", "backslashreplace"), reason))
            raise asyncssh.SFTPFailure(reason)

    def release(self) -> None:
        if self.quota is not None:
            self.quota.release()

    def _path(self, raw: bytes) -> VirtualPath:
        try:
            return self.ops.resolve(raw)
        except StorageError as exc:
            raise sftp_error(exc) from None

    # -- files -----------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        await self.acquire("open", path)
        try:
            return await self._open(path, pflags, attrs)
        except BaseException:
            self.release()
            raise

    async def _open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        vpath = self._path(path)
        if pflags & FXF_READ and pflags & FXF_WRITE:
            raise asyncssh.SFTPOpUnsupported("read-write opens are not supported")
        if pflags & FXF_APPEND:
            raise asyncssh.SFTPOpUnsupported("append/resume is not supported: uploads are atomic")
        if not pflags & FXF_WRITE:
            return await _guard(self.ops.open_read(vpath))
        # Every write-open replaces the whole file, written front to back:
        # OpenSSH opens WRITE|CREAT without TRUNC and writes from offset 0.
        # A write at any other offset (in-place patching) is refused.
        if pflags & FXF_EXCL or not pflags & FXF_CREAT:
            exists = await self._exists(vpath)
            if exists and pflags & FXF_EXCL:
                raise asyncssh.SFTPFailure("file already exists")
            if not exists and not pflags & FXF_CREAT:
                raise asyncssh.SFTPNoSuchFile("no such file")
        mode = attrs.permissions if attrs.permissions is not None else 0o644
        upload = await _guard(self.ops.open_write(vpath, mode=mode))
        return _Writing(upload, vpath)

    async def _exists(self, vpath: VirtualPath) -> bool:
        try:
            await self.ops.stat(vpath)
        except StorageError as exc:
            if exc.fault is Fault.NOT_FOUND:
                return False
            raise sftp_error(exc) from None
        return True

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if not isinstance(file_obj, Download):
            raise asyncssh.SFTPPermissionDenied("file not open for reading")
        if self._drain is not None:
            await self._drain()
        data = await _guard(file_obj.read(offset, min(size, MAX_DATA)))
        if not data:
            raise asyncssh.SFTPEOFError()
        return data

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, _Writing):
            raise asyncssh.SFTPPermissionDenied("file not open for writing")
        try:
            await file_obj.upload.write(offset, data)
        except StorageError as exc:
            await file_obj.upload.abort(exc.detail)
            raise sftp_error(exc) from None
        return len(data)

    async def close(self, file_obj: object) -> None:
        try:
            await self._close(file_obj)
        finally:
            self.release()

    async def _close(self, file_obj: object) -> None:
        if isinstance(file_obj, Download):
            await file_obj.close(self.aborting)
        elif isinstance(file_obj, _Writing):
            if self.aborting is not None:
                await file_obj.upload.abort(self.aborting)
                return
            file_obj.upload.times = file_obj.times
            await _guard(file_obj.upload.commit())
            if file_obj.times is not None:
                upload = file_obj.upload
                await _guard(self.ops.set_times(file_obj.path, *file_obj.times, upload=upload))

    async def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        if isinstance(file_obj, Download):
            return asyncssh.SFTPAttrs(size=file_obj.size, permissions=0o100644)
        if isinstance(file_obj, _Writing):
            return asyncssh.SFTPAttrs(size=file_obj.upload.bytes, permissions=0o100644)
        raise asyncssh.SFTPFailure("invalid handle")

    async def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        if isinstance(file_obj, _Writing):
            if attrs.size is not None and attrs.size != file_obj.upload.bytes:
                raise asyncssh.SFTPOpUnsupported("truncation is not supported")
            if attrs.atime is not None and attrs.mtime is not None:
                file_obj.times = (float(attrs.atime), float(attrs.mtime))
        # Modes and owners are the gateway's to decide; a request to change
        # them is accepted and ignored, as scp -p and WinSCP expect.

    async def fsync(self, file_obj: object) -> None:
        # Uploads are fsynced when they commit; nothing is durable before.
        if not isinstance(file_obj, _Writing | Download):
            raise asyncssh.SFTPFailure("invalid handle")

    # -- names -----------------------------------------------------------------------

    async def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return _attrs(await _guard(self.ops.stat(self._path(path))))

    lstat = stat  # symlinks are resolved (and confined) by the backend, never shown

    async def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        vpath = self._path(path)
        if attrs.size is not None:
            raise asyncssh.SFTPOpUnsupported("truncation is not supported")
        if attrs.atime is not None and attrs.mtime is not None:
            await _guard(self.ops.set_times(vpath, float(attrs.atime), float(attrs.mtime)))

    async def open_listing(self, path: bytes) -> Listing:
        await self.acquire("list", path)
        try:
            return await _guard(open_listing(self.ops, self._path(path)))
        except BaseException:
            self.release()
            raise

    async def realpath(self, path: bytes) -> bytes:
        vpath = self._path(path)
        if not vpath.is_root:
            await _guard(self.ops.stat_allowed(vpath))
        return vpath.text.encode("utf-8")

    async def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        mode = attrs.permissions if attrs.permissions is not None else 0o755
        await _guard(self.ops.mkdir(self._path(path), mode))

    async def rmdir(self, path: bytes) -> None:
        await _guard(self.ops.rmdir(self._path(path)))

    async def remove(self, path: bytes) -> None:
        await _guard(self.ops.remove(self._path(path)))

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await _guard(self.ops.rename(self._path(oldpath), self._path(newpath), overwrite=False))

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await _guard(self.ops.rename(self._path(oldpath), self._path(newpath), overwrite=True))

    async def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        space = await _guard(self.ops.space(self._path(path)))
        return asyncssh.SFTPVFSAttrs(
            bsize=space.block_size,
            frsize=space.fragment_size,
            blocks=space.blocks,
            bfree=space.free_blocks,
            bavail=space.available_blocks,
            files=space.files,
            ffree=space.free_files,
            favail=space.available_files,
            namemax=space.max_name,  # fsid and flag: nothing of the host's to tell
        )

    async def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        if isinstance(file_obj, _Writing):
            return await self.statvfs(file_obj.path.text.encode("utf-8"))
        raise asyncssh.SFTPOpUnsupported("fstatvfs is supported on uploads only")

    async def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPOpUnsupported("symbolic links are not exposed")

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("creating links is not allowed")

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("creating links is not allowed")

    def exit(self) -> None:
        # OpenSSH 9 scp (SFTP mode) exits 1 without an exit status.
        self.channel.exit(0)


class GatewaySFTPHandler(NarrowSFTPHandler):
    """asyncssh's SFTP server handler with Conduit's narrower contract.

    The private-API half (message limit, extensions, directory handles,
    cleanup) is :class:`conduit._asyncssh.sftpserver.NarrowSFTPHandler`;
    this fills in its hooks.
    """

    max_message = MAX_MESSAGE

    @property
    def gateway_server(self) -> GatewaySFTPServer:
        server = self.server
        assert isinstance(server, GatewaySFTPServer)
        return server

    def session_ending(self, exc: Exception | None) -> None:
        # Handles still open now were never closed by the client: whatever
        # they were uploading is incomplete and must not be committed.
        self.gateway_server.aborting = f"session ended: {exc}" if exc else "session ended"

    def close_listing(self, listing: object) -> None:
        if isinstance(listing, Listing):
            listing.close()
            self.gateway_server.release()

    async def open_listing(self, path: bytes) -> Listing:
        return await self.gateway_server.open_listing(path)

    def advertised_limits(self) -> asyncssh.SFTPLimits:
        quota = self.gateway_server.quota
        handles = quota.per_session_cap if quota is not None else 64
        return asyncssh.SFTPLimits(MAX_MESSAGE, MAX_DATA, MAX_DATA, handles)

    async def expand_path(self, path: bytes) -> bytes:
        return await self.gateway_server.realpath(path)

    async def copy_data(
        self, source: object, offset: int, length: int, target: object, target_offset: int
    ) -> None:
        upload = target.upload if isinstance(target, _Writing) else None
        await _guard(sftpext.copy_data(source, offset, length, upload, target_offset))

    async def check_file(
        self, file: object, algorithms: bytes, start: int, length: int, block: int
    ) -> tuple[bytes, bytes]:
        upload = file.upload if isinstance(file, _Writing) else None
        return await _guard(sftpext.check_file(file, upload, algorithms, start, length, block))
