"""The local backend: one area folder, confined and atomic by construction.

Every path is resolved from a file descriptor of the area's root, one
component at a time, with ``O_NOFOLLOW``: there is no string that could be
tricked into pointing elsewhere. Symbolic links found on the way are followed
only when their target is relative and stays inside the area (absolute
targets, targets that climb out, and loops are refused). Uploads are written
to a hidden temp file beside the final name and renamed over it on commit.

Decisions: listings show regular files and folders only (FIFOs, sockets,
devices and links that leave the area are hidden); writing to a name that is a
symbolic link is refused, whatever the link points at.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Callable
from pathlib import Path

from conduit.errors import Concealed, Fault, StorageError
from conduit.storage import fsops
from conduit.storage.base import Entry, RelPath, Space, Stat
from conduit.storage.localfiles import (
    DIR_FLAGS,
    PROCESS_TAG,
    TEMP_PREFIX,
    ReadFile,
    WriteFile,
    fault_of,
    stat_of,
    temp_name,
)

MAX_LINK_HOPS = 40


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise StorageError(Fault.FORBIDDEN, "invalid name")


# What listings hide (links that leave the area or loop, FIFOs, devices) is
# refused as missing: the client cannot tell it from a name that does not
# exist; the detail keeps the truth for the audit. (A new exception each time:
# re-raising one instance would grow its traceback with every refusal.)
def _leaves() -> Concealed:
    return Concealed("symbolic link leaves the area")


class _Resolved:
    """Open directories from the root down to the one holding ``name``.

    ``name`` is None when the path names that directory itself.
    """

    def __init__(self, fds: list[int], name: str | None) -> None:
        self._fds = fds
        self.name = name

    @property
    def dir_fd(self) -> int:
        return self._fds[-1]

    def close(self) -> None:
        for fd in self._fds[1:]:
            os.close(fd)
        self._fds = self._fds[:1]

    def __enter__(self) -> _Resolved:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalBackend:
    """A folder on this machine served as one area."""

    def __init__(self, name: str, root: Path, *, durable: bool = True) -> None:
        """``durable``: fsync each upload and its folder before commit returns, so an
        upload reported as stored survives a power loss. Atomicity (nothing
        partial under a final name) holds either way."""
        self.name = name
        self.durable = durable
        root.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._root = os.open(root, DIR_FLAGS & ~os.O_NOFOLLOW)

    # -- resolution ---------------------------------------------------------------

    def _resolve(self, parts: RelPath, *, follow_last: bool) -> _Resolved:
        for part in parts:
            _check_name(part)
        fds = [self._root]
        todo = list(reversed(parts))
        hops = 0
        resolved = _Resolved(fds, None)
        try:
            while todo:
                part = todo.pop()
                last = not todo
                if part in ("", "."):
                    continue
                if part == "..":
                    if len(fds) == 1:
                        raise _leaves()
                    os.close(fds.pop())
                    continue
                if last and not follow_last:
                    resolved.name = part
                    break
                try:
                    info = os.stat(part, dir_fd=fds[-1], follow_symlinks=False)
                except FileNotFoundError:
                    if last:
                        resolved.name = part
                        break
                    raise StorageError(Fault.NOT_FOUND) from None
                if st.S_ISLNK(info.st_mode):
                    hops += 1
                    if hops > MAX_LINK_HOPS:
                        raise Concealed("too many levels of symbolic links")
                    target = os.readlink(part, dir_fd=fds[-1])
                    if target.startswith("/"):
                        raise _leaves()
                    todo.extend(reversed(target.split("/")))
                    continue
                if last:
                    resolved.name = part
                    break
                if not st.S_ISDIR(info.st_mode):
                    if not st.S_ISREG(info.st_mode):
                        raise Concealed("a path through something listings hide")
                    raise StorageError(Fault.NOT_A_DIRECTORY)
                fds.append(os.open(part, DIR_FLAGS, dir_fd=fds[-1]))
        except OSError as exc:
            resolved.close()
            raise fault_of(exc) from None
        except StorageError:
            resolved.close()
            raise
        return resolved

    # -- metadata ---------------------------------------------------------------------

    async def stat(self, path: RelPath) -> Stat:
        with self._resolve(path, follow_last=True) as where:
            if where.name is None:
                return stat_of(os.fstat(where.dir_fd))
            if where.name.startswith(TEMP_PREFIX):
                raise StorageError(Fault.NOT_FOUND)
            try:
                info = os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
            except OSError as exc:
                raise fault_of(exc) from None
            if not (st.S_ISREG(info.st_mode) or st.S_ISDIR(info.st_mode)):
                raise Concealed("not a regular file or folder")  # listings hide it too
            return stat_of(info)

    async def temp_size(self, path: RelPath) -> int:
        """The size of the upload temp file ``path`` (for crash recovery's record of
        how many bytes had arrived); temp files are invisible to :meth:`stat`."""
        with self._resolve(path, follow_last=False) as where:
            if where.name is None or not where.name.startswith(TEMP_PREFIX):
                raise StorageError(Fault.NOT_FOUND)
            try:
                info = os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
            except OSError as exc:
                raise fault_of(exc) from None
            if not st.S_ISREG(info.st_mode):
                raise StorageError(Fault.NOT_FOUND)
            return info.st_size

    async def listdir(self, path: RelPath) -> list[Entry]:
        with self._resolve(path, follow_last=True) as where:
            try:
                fd = (
                    os.dup(where.dir_fd)
                    if where.name is None
                    else os.open(where.name, DIR_FLAGS, dir_fd=where.dir_fd)
                )
            except OSError as exc:
                raise fault_of(exc) from None
        try:
            names = sorted(os.listdir(fd))
            entries = []
            for name in names:
                if name.startswith(TEMP_PREFIX):
                    continue
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if st.S_ISLNK(info.st_mode):
                    try:
                        entries.append(Entry(name, await self.stat((*path, name))))
                    except StorageError:
                        continue  # a link that leaves the area, dangles or loops
                elif st.S_ISREG(info.st_mode) or st.S_ISDIR(info.st_mode):
                    entries.append(Entry(name, stat_of(info)))
        except OSError as exc:
            raise fault_of(exc) from None
        finally:
            os.close(fd)
        return [e for e in entries if e.stat.is_file or e.stat.is_dir]

    async def set_times(self, path: RelPath, atime: float, mtime: float) -> None:
        with self._resolve(path, follow_last=True) as where:
            if where.name is None:
                raise StorageError(Fault.FORBIDDEN, "cannot change the area itself")
            try:
                os.utime(where.name, (atime, mtime), dir_fd=where.dir_fd, follow_symlinks=False)
            except OSError as exc:
                raise fault_of(exc) from None

    async def statvfs(self, path: RelPath) -> Space:
        with self._resolve(path, follow_last=True) as where:
            try:
                vfs = os.fstatvfs(where.dir_fd)
            except OSError as exc:
                raise fault_of(exc) from None
        return Space(
            vfs.f_bsize,
            vfs.f_frsize,
            vfs.f_blocks,
            vfs.f_bfree,
            vfs.f_bavail,
            vfs.f_files,
            vfs.f_ffree,
            vfs.f_favail,
            vfs.f_namemax,
        )

    # -- files ---------------------------------------------------------------------------

    async def open_read(self, path: RelPath) -> ReadFile:
        with self._resolve(path, follow_last=True) as where:
            if where.name is None:
                raise StorageError(Fault.IS_A_DIRECTORY)
            if where.name.startswith(TEMP_PREFIX):
                raise StorageError(Fault.NOT_FOUND)
            try:
                # O_NONBLOCK: opening a FIFO must not wait for a writer.
                fd = os.open(
                    where.name,
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    dir_fd=where.dir_fd,
                )
            except OSError as exc:
                raise fault_of(exc) from None
        info = os.fstat(fd)
        if not st.S_ISREG(info.st_mode):
            os.close(fd)
            if st.S_ISDIR(info.st_mode):
                raise StorageError(Fault.IS_A_DIRECTORY)
            raise Concealed("not a regular file")
        return ReadFile(fd, info.st_size)

    async def open_write(self, path: RelPath, *, mode: int = 0o644) -> WriteFile:
        with self._resolve(path, follow_last=False) as where:
            name = where.name
            if name is None or name.startswith(TEMP_PREFIX):
                raise StorageError(Fault.FORBIDDEN, "cannot write here")
            try:
                existing = os.stat(name, dir_fd=where.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            except OSError as exc:
                raise fault_of(exc) from None
            if existing is not None:
                if st.S_ISLNK(existing.st_mode):
                    raise StorageError(Fault.FORBIDDEN, "target is a symbolic link")
                if st.S_ISDIR(existing.st_mode):
                    raise StorageError(Fault.IS_A_DIRECTORY)
                if not st.S_ISREG(existing.st_mode):
                    raise StorageError(Fault.FORBIDDEN, "not a regular file")
            dir_fd = os.dup(where.dir_fd)
        temp = temp_name(name)
        try:
            fd = os.open(
                temp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                (mode & 0o666) | 0o600,
                dir_fd=dir_fd,
            )
        except OSError as exc:
            os.close(dir_fd)
            raise fault_of(exc) from None
        return WriteFile(dir_fd, temp, name, fd, self.durable)

    async def adopt(self, path: RelPath, source: Path, *, mode: int = 0o644) -> None:
        """Put ``source`` (a whole, fsynced file elsewhere on this file system: a
        released quarantine item) under ``path`` by renaming it, not copying it.
        The checks and the atomic rename into place are :meth:`open_write`'s;
        ``UNSUPPORTED`` if ``source`` is on another file system (then copy)."""
        handle = await self.open_write(path, mode=mode)
        try:
            os.chmod(source, os.fstat(handle.fd).st_mode & 0o777)
            os.rename(source, handle.temp, dst_dir_fd=handle.dir_fd)
        except OSError as exc:
            await handle.abort()
            raise fault_of(exc) from None
        await handle.commit()

    # -- changes -----------------------------------------------------------------------------

    def _entry(self, path: RelPath) -> tuple[_Resolved, os.stat_result]:
        """The entry itself (a link is not followed) and its lstat; it must exist."""
        where = self._resolve(path, follow_last=False)
        try:
            if where.name is None or where.name.startswith(TEMP_PREFIX):
                raise StorageError(
                    Fault.NOT_FOUND if where.name else Fault.FORBIDDEN,
                    None if where.name else "cannot change the area itself",
                )
            try:
                return where, os.stat(where.name, dir_fd=where.dir_fd, follow_symlinks=False)
            except OSError as exc:
                raise fault_of(exc) from None
        except StorageError:
            where.close()
            raise

    async def mkdir(self, path: RelPath, *, mode: int = 0o755) -> None:
        with self._resolve(path, follow_last=False) as where:
            if where.name is None or where.name.startswith(TEMP_PREFIX):
                raise StorageError(Fault.FORBIDDEN, "cannot create that name")
            try:
                os.mkdir(where.name, (mode & 0o777) | 0o700, dir_fd=where.dir_fd)
            except OSError as exc:
                raise fault_of(exc) from None

    async def rmdir(self, path: RelPath) -> None:
        where, info = self._entry(path)
        with where:
            if not st.S_ISDIR(info.st_mode):
                raise StorageError(Fault.NOT_A_DIRECTORY)
            try:
                os.rmdir(where.name or "", dir_fd=where.dir_fd)
            except OSError as exc:
                raise fault_of(exc) from None

    async def remove(self, path: RelPath) -> None:
        where, info = self._entry(path)
        with where:
            if st.S_ISDIR(info.st_mode):
                raise StorageError(Fault.IS_A_DIRECTORY)
            try:
                os.unlink(where.name or "", dir_fd=where.dir_fd)
            except OSError as exc:
                raise fault_of(exc) from None

    async def rename(self, old: RelPath, new: RelPath, *, overwrite: bool) -> None:
        source, _ = self._entry(old)
        with source, self._resolve(new, follow_last=False) as target:
            if target.name is None or target.name.startswith(TEMP_PREFIX):
                raise StorageError(Fault.FORBIDDEN, "cannot rename to that name")
            assert source.name is not None
            try:
                if overwrite:
                    os.rename(
                        source.name, target.name, src_dir_fd=source.dir_fd, dst_dir_fd=target.dir_fd
                    )
                else:
                    fsops.rename_noreplace(source.dir_fd, source.name, target.dir_fd, target.name)
            except OSError as exc:
                raise fault_of(exc) from None

    def cleanup_orphans(self, stop: Callable[[], bool] | None = None) -> fsops.SweepResult:
        """Remove temp files an earlier process left behind (a crash).

        Safe while the area is served: this process's own uploads carry its
        tag and are left alone. It can take long on a big tree; run it in a
        thread (``stop`` ends it early).
        """
        ours = TEMP_PREFIX + PROCESS_TAG

        def is_orphan(name: str) -> bool:
            return name.startswith(TEMP_PREFIX) and not name.startswith(ours)

        return fsops.sweep(self._root, is_orphan, stop=stop)

    async def close(self) -> None:
        if self._root >= 0:
            os.close(self._root)
            self._root = -1
