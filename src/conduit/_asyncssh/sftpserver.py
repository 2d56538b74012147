"""asyncssh's SFTP server handler, narrowed: the private half of Conduit's SFTP server.

asyncssh's ``SFTPServerHandler`` has no public way to change its message
size limit, the extensions it offers, what a directory handle is, or what
happens to handles still open when a session ends. :class:`NarrowSFTPHandler`
does all of that through its private tables and methods, and hands the
decisions to public hooks that the gateway's handler
(``conduit.gateway.sftp.GatewaySFTPHandler``) fills in:

* messages over :attr:`NarrowSFTPHandler.max_message` are refused (OpenSSH's
  256 KiB instead of asyncssh's 4 MiB), advertised through
  ``limits@openssh.com`` (:meth:`~NarrowSFTPHandler.advertised_limits`);
* ``expand-path@openssh.com`` is answered (:meth:`~NarrowSFTPHandler.expand_path`);
* hard links, asyncssh's own ``copy-data``, ``ranges@asyncssh.com`` and
  ``lsetstat`` are removed; ``copy-data`` and ``check-file-handle`` (the
  draft-ietf-secsh-filexfer-extensions requests, the delta sync's two halves)
  are decoded here and decided by :meth:`~NarrowSFTPHandler.copy_data` and
  :meth:`~NarrowSFTPHandler.check_file`, which see the server's file objects,
  never a path;
* OPENDIR asks :meth:`~NarrowSFTPHandler.open_listing` for an async iterator
  of names (asyncssh's READDIR pages through it), CLOSE of such a handle and
  the session's end go to :meth:`~NarrowSFTPHandler.close_listing`;
* when the session ends, :meth:`~NarrowSFTPHandler.session_ending` runs
  before asyncssh closes the files still open (the gateway aborts them).

Every asyncssh member used here is in :data:`USES`, pinned by
tests/test_tuning.py.
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh import SFTPBadMessage
from asyncssh import sftp as _sftp
from asyncssh.packet import SSHPacket, String

from conduit._asyncssh.sftplean import LeanSFTPHandler

SFTPServerHandler = _sftp.SFTPServerHandler
_SFTPHandler = _sftp.SFTPHandler

#: SFTP v3 reply type asyncssh does not export (draft-ietf-secsh-filexfer-02).
FXP_NAME = 104
#: SFTP v3 request types (asyncssh dispatches on them).
FXP_OPENDIR = 11
FXP_CLOSE = 4
FXP_EXTENDED_REPLY = 201

#: Extensions asyncssh offers that a gateway must not.
REMOVED = (
    b"hardlink@openssh.com",
    b"copy-data",
    b"ranges@asyncssh.com",
    b"lsetstat@openssh.com",
)

#: Private members of asyncssh's SFTP handlers used or replaced here.
USES: dict[str, Any] = {
    "SFTPHandler.__init__": _SFTPHandler.__init__,
    "SFTPHandler.recv_packet": _SFTPHandler.recv_packet,
    "SFTPHandler._return_types": _SFTPHandler._return_types,
    "SFTPServerHandler.__init__": SFTPServerHandler.__init__,
    "SFTPServerHandler._extensions": SFTPServerHandler._extensions,
    "SFTPServerHandler._packet_handlers": SFTPServerHandler._packet_handlers,
    "SFTPServerHandler._process_packet": SFTPServerHandler._process_packet,
    "SFTPServerHandler._cleanup": SFTPServerHandler._cleanup,
    "SFTPServerHandler._get_next_handle": SFTPServerHandler._get_next_handle,
    "SFTPServerHandler._process_opendir": SFTPServerHandler._process_opendir,
    "SFTPServerHandler._process_readdir": SFTPServerHandler._process_readdir,
    "SFTPServerHandler._process_close": SFTPServerHandler._process_close,
    "SFTPServerHandler._process_limits": SFTPServerHandler._process_limits,
}


class _ExtendedReply:
    """A reply asyncssh sends as is: ``_process_packet`` encodes any other result."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def encode(self, version: int) -> bytes:
        return self.payload


class NarrowSFTPHandler(LeanSFTPHandler):
    """asyncssh's SFTP server handler with a narrower contract; see the module."""

    #: The largest SFTP message accepted (OpenSSH's SFTP_MAX_MSG_LENGTH).
    max_message = 256 * 1024

    _extensions = [
        (b"newline", b"\n"),
        (b"posix-rename@openssh.com", b"1"),
        (b"statvfs@openssh.com", b"2"),
        (b"fstatvfs@openssh.com", b"2"),
        (b"fsync@openssh.com", b"1"),
        (b"limits@openssh.com", b"1"),
        (b"expand-path@openssh.com", b"1"),
        (b"copy-data", b"1"),
        (b"check-file", b"sha256"),
    ]

    # -- hooks for the application's handler ---------------------------------------------

    @property
    def server(self) -> asyncssh.SFTPServer:
        """The SFTP server this handler serves (asyncssh keeps it private)."""
        return self._server

    async def open_listing(self, path: bytes) -> Any:
        """An async iterator of ``SFTPName`` for an OPENDIR of ``path``."""
        raise asyncssh.SFTPOpUnsupported("listing is not supported")

    def close_listing(self, listing: object) -> None:
        """A listing's handle was closed, or the session ended with it open."""

    def session_ending(self, exc: Exception | None) -> None:
        """The session ends; the files still open are closed right after."""

    def advertised_limits(self) -> asyncssh.SFTPLimits:
        """The answer to ``limits@openssh.com``."""
        return asyncssh.SFTPLimits(self.max_message, 0, 0, 0)

    async def expand_path(self, path: bytes) -> bytes:
        """The answer to ``expand-path@openssh.com``."""
        raise asyncssh.SFTPOpUnsupported("expand-path is not supported")

    async def copy_data(
        self, source: object, offset: int, length: int, target: object, target_offset: int
    ) -> None:
        """``copy-data``: ``length`` bytes of ``source`` at ``offset`` into ``target``."""
        raise asyncssh.SFTPOpUnsupported("copy-data is not supported")

    async def check_file(
        self, file: object, algorithms: bytes, start: int, length: int, block: int
    ) -> tuple[bytes, bytes]:
        """``check-file-handle``: (algorithm, the concatenated block hashes)."""
        raise asyncssh.SFTPOpUnsupported("check-file is not supported")

    # -- asyncssh's private side ---------------------------------------------------------

    async def recv_packet(self) -> SSHPacket:
        message = await self.next_message(self.max_message)  # the usual case, see sftplean
        if message is not None:
            return SSHPacket(message)
        assert self._reader is not None
        length = int.from_bytes(await self._reader.readexactly(4), "big")
        if length > self.max_message:
            raise SFTPBadMessage(f"SFTP message over {self.max_message} bytes")
        return SSHPacket(await self._reader.readexactly(length))

    async def _cleanup(self, exc: Exception | None) -> None:
        if self._server is not None:
            self.session_ending(exc)
            for listing in self._dir_handles.values():
                self.close_listing(listing)
            self._dir_handles = {}
        await super()._cleanup(exc)

    async def _process_opendir(self, packet: SSHPacket) -> bytes:
        path = packet.get_string()
        packet.check_end()
        listing = await self.open_listing(path)
        handle = self._get_next_handle()
        self._dir_handles[handle] = listing
        return handle

    async def _process_close(self, packet: SSHPacket) -> None:
        self._replay()  # a failed lean close answered by asyncssh (see sftplean)
        peek = SSHPacket(packet.get_remaining_payload())
        listing = self._dir_handles.pop(peek.get_string(), None)
        if listing is None:
            return await super()._process_close(packet)  # a file (or no such handle)
        peek.check_end()
        self.close_listing(listing)

    async def _process_limits(self, packet: SSHPacket) -> asyncssh.SFTPLimits:
        packet.check_end()
        return self.advertised_limits()

    async def _process_expand_path(self, packet: SSHPacket) -> tuple[list[asyncssh.SFTPName], bool]:
        path = packet.get_string()
        packet.check_end()
        return [asyncssh.SFTPName(await self.expand_path(path))], False

    def _file(self, handle: bytes) -> object:
        file = self._file_handles.get(handle)
        if file is None:
            raise asyncssh.SFTPFailure("invalid handle")
        return file

    async def _process_copy_data(self, packet: SSHPacket) -> None:
        source, offset, length = packet.get_string(), packet.get_uint64(), packet.get_uint64()
        target, target_offset = packet.get_string(), packet.get_uint64()
        packet.check_end()
        await self.copy_data(self._file(source), offset, length, self._file(target), target_offset)

    async def _process_check_file(self, packet: SSHPacket) -> _ExtendedReply:
        handle, algorithms = packet.get_string(), packet.get_string()
        start, length, block = packet.get_uint64(), packet.get_uint64(), packet.get_uint32()
        packet.check_end()
        used, hashes = await self.check_file(self._file(handle), algorithms, start, length, block)
        return _ExtendedReply(String(b"check-file") + String(used) + hashes)

    _packet_handlers = {
        key: value for key, value in LeanSFTPHandler._packet_handlers.items() if key not in REMOVED
    }
    _packet_handlers.update(
        {
            FXP_OPENDIR: _process_opendir,  # type: ignore[dict-item]
            FXP_CLOSE: _process_close,  # type: ignore[dict-item]
            b"limits@openssh.com": _process_limits,  # type: ignore[dict-item]
            b"expand-path@openssh.com": _process_expand_path,  # type: ignore[dict-item]
            b"copy-data": _process_copy_data,  # type: ignore[dict-item]
            b"check-file-handle": _process_check_file,  # type: ignore[dict-item]
        }
    )
    _return_types = {
        **SFTPServerHandler._return_types,
        b"expand-path@openssh.com": FXP_NAME,
        b"check-file-handle": FXP_EXTENDED_REPLY,
    }
