"""A file arriving in quarantine under ``.part-ID``: the local backend's
atomic temp-file discipline (whole and durable under its kept name, or
nothing), shared by payload uploads and evidence."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from conduit.errors import Fault, StorageError

PART = ".part-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Part:
    """A file arriving under ``.part-ID`` in a quarantine folder (the atomic
    temp-file discipline of the local backend)."""

    atomic = True
    device_sha256: str | None = None

    def __init__(self, folder: Path, ident: str) -> None:
        self.id = ident
        self.folder = folder
        self.part = folder / f"{PART}{ident}"
        self.fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.sha256 = ""
        self.size = 0
        self.done = False

    def whole(self, sha256: str, size: int) -> None:
        """The pipeline's hash and size of every byte (set before the commit)."""
        self.sha256, self.size = sha256, size

    async def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise StorageError(Fault.NO_SPACE if full else Fault.FAILURE) from None

    def _keep(self, final: Path) -> None:
        """fsync, close and rename into ``final``: whole and durable, or nothing."""
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        os.rename(self.part, final)
        _fsync_dir(self.folder)
        if final.parent != self.folder:
            _fsync_dir(final.parent)

    async def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        self.part.unlink(missing_ok=True)
