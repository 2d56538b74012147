"""SFTP listings served a page at a time.

An OPENDIR used to list, stat and filter the whole folder at once and keep
the result until the client closed the handle: 30 open listings of a
20,000-entry folder held ~11.5 MiB each. A :class:`Listing` is asked for
entries by asyncssh's READDIR (up to 128 per reply) and reads that many from
the area's folder (:mod:`conduit.storage.localdir`), asking the policy as it
goes: once for the page where one answer holds for every name (no pattern can
tell them apart), else about each entry; an open listing holds one descriptor
and one page.
The virtual root, ``/devices`` and device folders (whose relays return whole
listings) are listed at once, as before.
"""

from __future__ import annotations

from collections import deque

import asyncssh

from conduit._asyncssh.records import listed_attrs, listed_name
from conduit.config.model import Op
from conduit.errors import StorageError
from conduit.gateway.operations import Operations
from conduit.gateway.vfs import VirtualPath
from conduit.names import DEVICES
from conduit.storage.base import Entry, Stat
from conduit.storage.local import LocalBackend
from conduit.storage.localdir import DirStream, open_dir

#: Entries read from the folder per refill (asyncssh sends up to 128 per READDIR).
PAGE = 128


def attrs(st: Stat) -> asyncssh.SFTPAttrs:
    """SFTP attributes of a file or folder: no real owner, one link."""
    return listed_attrs(st.size, st.mode, int(st.atime), int(st.mtime))


def _name(entry: Entry) -> asyncssh.SFTPName:
    return listed_name(entry.name.encode("utf-8"), attrs(entry.stat))


class Listing:
    """An open SFTP listing; an async iterator of names, as asyncssh expects."""

    def __init__(
        self,
        ops: Operations,
        path: VirtualPath,
        stream: DirStream | None = None,
        entries: list[Entry] | None = None,
    ) -> None:
        self._ops = ops
        self._path = path
        self._stream = stream
        self._ready: deque[asyncssh.SFTPName] = deque(_name(e) for e in entries or ())

    def __aiter__(self) -> Listing:
        return self

    async def __anext__(self) -> asyncssh.SFTPName:
        while not self._ready:
            stream = self._stream
            if stream is None:
                raise StopAsyncIteration
            try:
                page = await stream.page(PAGE)
            except StorageError as exc:  # the folder went away or became unreadable
                self.close()
                raise asyncssh.SFTPFailure(exc.reason) from None
            if not page:
                self.close()
                raise StopAsyncIteration
            # the policy as it stands now, asked once for the page when it can
            # answer for every name, else about each name
            shown = self._ops._listed(self._path, [e.name for e in page])
            self._ready.extend(_name(e) for e, yes in zip(page, shown, strict=True) if yes)
        return self._ready.popleft()

    def close(self) -> None:
        self._ready.clear()
        if self._stream is not None:
            self._stream.close()
            self._stream = None


async def open_listing(ops: Operations, path: VirtualPath) -> Listing:
    """Authorize listing ``path`` and open it (StorageError if refused)."""
    if path.is_root or path.top == DEVICES:
        return Listing(ops, path, entries=await ops.listdir(path))
    await ops.authorize(Op.LIST, path)
    backend, rel, _ = ops.locate(path)
    if not isinstance(backend, LocalBackend):
        return Listing(ops, path, entries=await ops.listdir(path))
    return Listing(ops, path, stream=open_dir(backend, rel))
