"""The one storage interface every backend implements (local disk, device relay).

The gateway never touches a file itself: it hands a backend a *relative path*
(a tuple of plain name components, already free of ``.``, ``..``, ``/`` and
NUL) and the backend resolves it against its own root, component by
component, refusing anything that would leave that root. Errors are
:mod:`conduit.errors` values a person can read and never contain a real
server path.
"""

from __future__ import annotations

import stat as stat_module
from dataclasses import dataclass
from typing import Protocol

RelPath = tuple[str, ...]
"""A path below a backend's root, as name components: ``("dir", "file.bin")``."""


@dataclass(frozen=True, slots=True)
class Stat:
    """What a backend reports about one entry (an ``os.stat_result`` subset)."""

    size: int
    mode: int
    mtime: float
    atime: float

    @property
    def is_dir(self) -> bool:
        return stat_module.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat_module.S_ISREG(self.mode)


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    stat: Stat


class ReadHandle(Protocol):
    """An open file being read; ``size`` is its length when it was opened."""

    size: int

    async def read(self, offset: int, length: int) -> bytes: ...

    async def close(self) -> None: ...


class WriteHandle(Protocol):
    """An upload in progress. Bytes go to a hidden temp name; nothing appears
    under the final name until :meth:`commit`. :meth:`abort` (or a crash)
    leaves the final name untouched.

    After commit, ``atomic`` says whether the final name could only ever show
    the complete file (False on a legacy-SCP device without a rename command)
    and ``device_sha256`` is the hash the storage itself reported for what
    landed (chain of custody; None where the storage is local). A handle
    whose commit can fail after the final name already shows the whole file
    (a local file's folder flush after its rename) says so with
    ``in_place = True``: the upload is then recorded as done, with the error.
    """

    atomic: bool
    device_sha256: str | None

    async def write(self, offset: int, data: bytes) -> None: ...

    async def commit(self) -> None: ...

    async def abort(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Space:
    """The file system holding a backend's files (``statvfs``'s useful part)."""

    block_size: int
    fragment_size: int
    blocks: int
    free_blocks: int
    available_blocks: int
    files: int
    free_files: int
    available_files: int
    max_name: int


class Backend(Protocol):
    """One storage space: a local area folder or a relayed device."""

    name: str

    async def stat(self, path: RelPath) -> Stat: ...

    async def listdir(self, path: RelPath) -> list[Entry]: ...

    async def open_read(self, path: RelPath) -> ReadHandle: ...

    async def open_write(self, path: RelPath, *, mode: int = 0o644) -> WriteHandle: ...

    async def mkdir(self, path: RelPath, *, mode: int = 0o755) -> None: ...

    async def rmdir(self, path: RelPath) -> None: ...

    async def remove(self, path: RelPath) -> None: ...

    async def rename(self, old: RelPath, new: RelPath, *, overwrite: bool) -> None: ...

    async def set_times(self, path: RelPath, atime: float, mtime: float) -> None: ...

    async def statvfs(self, path: RelPath) -> Space:
        """Free space where ``path`` lives; ``UNSUPPORTED`` where unknown."""
        ...

    async def close(self) -> None: ...
