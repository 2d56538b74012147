"""Small system-call helpers over a directory fd, for the local backend."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat as st
from collections.abc import Callable
from dataclasses import dataclass

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


#: Folders deeper than this below an area's root are not visited by the sweep.
#: A client path holds at most 4,096 bytes, so at most 2,048 levels; the walk
#: keeps one list of pending folder names per level, never one descriptor.
MAX_SWEEP_DEPTH = 2048


@dataclass
class SweepResult:
    """What one sweep did; ``stopped`` says why it ended early, if it did."""

    removed: int = 0
    folders: int = 0
    unreadable: int = 0
    too_deep: int = 0
    stopped: str | None = None


def sweep(
    dir_fd: int,
    is_orphan: Callable[[str], bool],
    *,
    max_depth: int = MAX_SWEEP_DEPTH,
    stop: Callable[[], bool] | None = None,
) -> SweepResult:
    """Remove regular files for which ``is_orphan(name)`` holds, below ``dir_fd``.

    Nothing a user can create may break it: the walk is iterative (no
    recursion limit), holds one descriptor at a time (no descriptor limit),
    never follows a symbolic link, skips folders it cannot open or read, and
    stops below ``max_depth``. It climbs back up with ``..`` and checks that
    it arrived where it came from (device and inode): if a client renamed a
    folder meanwhile, the sweep stops rather than walk a tree it no longer
    knows. ``stop()`` is asked once per folder.
    """
    result = SweepResult()
    fd = os.dup(dir_fd)
    # for each folder on the way down: its subfolders still to visit, its identity
    stack: list[tuple[list[str], tuple[int, int]]] = []
    try:
        pending = _sweep_folder(fd, is_orphan, result)
        here = _identity(fd)
        while True:
            if stop is not None and stop():
                result.stopped = "stop requested"
                break
            if pending and len(stack) < max_depth:
                name = pending.pop()
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    result.unreadable += 1  # gone, replaced by a link, or no permission
                    continue
                stack.append((pending, here))
                os.close(fd)
                fd = child
                here = _identity(fd)
                pending = _sweep_folder(fd, is_orphan, result)
                continue
            result.too_deep += len(pending)
            if not stack:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            pending, here = stack.pop()
            if _identity(fd) != here:
                result.stopped = "a folder was moved during the sweep"
                break
    finally:
        os.close(fd)
    return result


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _sweep_folder(fd: int, is_orphan: Callable[[str], bool], result: SweepResult) -> list[str]:
    """Remove the orphans in one folder; return its subfolders' names."""
    result.folders += 1
    folders: list[str] = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.name)
                    elif is_orphan(entry.name) and entry.is_file(follow_symlinks=False):
                        os.unlink(entry.name, dir_fd=fd)
                        result.removed += 1
                except OSError:
                    result.unreadable += 1
    except OSError:
        result.unreadable += 1
    return folders


_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_noreplace(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    """Rename, failing with EEXIST instead of replacing (SFTP v3 rename semantics)."""
    if _renameat2 is not None:
        result = _renameat2(
            src_dir,
            src.encode("utf-8", "surrogateescape"),
            dst_dir,
            dst.encode("utf-8", "surrogateescape"),
            _RENAME_NOREPLACE,
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code))
    # No renameat2 here: hard-link then unlink is atomic for files; for a
    # folder, check then rename (a race only with local processes).
    info = os.stat(src, dir_fd=src_dir, follow_symlinks=False)
    if st.S_ISDIR(info.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.stat(dst, dir_fd=dst_dir, follow_symlinks=False)
            raise OSError(errno.EEXIST, "exists")
        os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
    else:
        os.link(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
        os.unlink(src, dir_fd=src_dir)
