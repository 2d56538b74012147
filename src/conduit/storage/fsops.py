"""Small system-call helpers over a directory fd, for the local backend."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat as st

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def sweep(dir_fd: int, prefix: str) -> int:
    """Remove regular files named ``prefix...`` below ``dir_fd``, never following links."""
    removed = 0
    for name in os.listdir(dir_fd):
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if st.S_ISREG(info.st_mode) and name.startswith(prefix):
            os.unlink(name, dir_fd=dir_fd)
            removed += 1
        elif st.S_ISDIR(info.st_mode):
            child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                removed += sweep(child, prefix)
            finally:
                os.close(child)
    return removed


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
