"""A local area's folder read a page at a time, for SFTP listings.

:meth:`LocalBackend.listdir` reads a whole folder, stats every entry and
sorts them: fine for SCP's recursion, but an SFTP client can open many
listings of a 20,000-entry folder and read none of them (~11.5 MiB each).
A :class:`DirStream` holds the kernel's directory stream instead (two
descriptors: scandir reads through a copy of the one it is given) and stats
only the entries of the page a READDIR asks for. Entries come in directory
order (SFTP promises no order; clients sort). The same rules as ``listdir``
apply: temp files are hidden, symlinks are followed only within the area,
and only regular files and folders are shown.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Iterator

from conduit.errors import StorageError
from conduit.storage.base import Entry, RelPath
from conduit.storage.local import LocalBackend
from conduit.storage.localfiles import DIR_FLAGS, TEMP_PREFIX, fault_of, stat_of


class DirStream:
    """An open folder of a local area; :meth:`page` reads the next entries."""

    def __init__(self, backend: LocalBackend, path: RelPath, fd: int) -> None:
        self._backend = backend
        self._path = path
        self._fd = fd
        # scandir(fd) reads through a copy of fd, but its entries stat
        # through fd itself: fd stays open as long as the stream.
        self._entries: Iterator[os.DirEntry[str]] | None = os.scandir(fd)

    async def page(self, size: int) -> list[Entry]:
        """Up to ``size`` more entries; an empty list at the end."""
        out: list[Entry] = []
        entries = self._entries
        while entries is not None and len(out) < size:
            try:
                item = next(entries, None)
                if item is None:
                    self.close()
                    break
                if item.name.startswith(TEMP_PREFIX):
                    continue
                info = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the folder was read
            except OSError as exc:
                self.close()
                raise fault_of(exc) from None
            if st.S_ISLNK(info.st_mode):
                try:
                    linked = await self._backend.stat((*self._path, item.name))
                except StorageError:
                    continue  # a link that leaves the area, dangles or loops
                if linked.is_file or linked.is_dir:
                    out.append(Entry(item.name, linked))
            elif st.S_ISREG(info.st_mode) or st.S_ISDIR(info.st_mode):
                out.append(Entry(item.name, stat_of(info)))
        return out

    def close(self) -> None:
        if self._entries is not None:
            self._entries.close()  # type: ignore[attr-defined]  # os.scandir's iterator
            self._entries = None
            os.close(self._fd)


def open_dir(backend: LocalBackend, path: RelPath) -> DirStream:
    """Open ``path`` in ``backend`` for reading a page at a time (one descriptor)."""
    with backend._resolve(path, follow_last=True) as where:
        try:
            # Never a dup of the area's own descriptor: a dup shares its
            # read position, and listings of one folder must not.
            fd = os.open(where.name or ".", DIR_FLAGS, dir_fd=where.dir_fd)
        except OSError as exc:
            raise fault_of(exc) from None
    try:
        return DirStream(backend, path, fd)
    except OSError as exc:
        os.close(fd)
        raise fault_of(exc) from None
