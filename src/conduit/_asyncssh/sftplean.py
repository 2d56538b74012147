"""The SFTP server's per-file requests without the work nobody sees.

asyncssh's ``SFTPServerHandler`` builds a debug message for every request
(open's formats every field of the client's attributes, read's and write's
format a size and the handle in hex), then one more for every reply, and
passes each result through ``typing.cast`` and a ``Tuple[...]`` subscript; at
the usual log levels every message is dropped. On a tree of small files that
was a sixth of the Python calls the server makes per file (about 200 of
1,200 for a download: open, read, read to the end, close). The read reply was
also copied once more than needed (``String(data)`` joins length and data
before the send path joins them again).

:class:`LeanSFTPHandler` answers ``OPEN``, ``READ``, ``WRITE``, ``CLOSE`` and
``FSETSTAT`` (scp sets each upload's mode with it) as asyncssh does, for SFTP
versions 3 and 4 (what OpenSSH and every common client speak), with the same
checks in the same order, the same handles and the same replies byte for
byte, minus the messages nobody reads. An OPEN's attributes with no flags
set (SFTP v3: every download's) are made as :mod:`.records` makes a
listing's, not by ``SFTPAttrs.decode`` (~35 calls); anything else is decoded
by asyncssh.
Whenever asyncssh's debug logging is on, or the session speaks version 5 or
6, asyncssh's own methods run instead, messages and all. A request refused
with an SFTP error (the end of file every download ends with, a refusal) is
answered with that error's own encoding, as asyncssh answers it; any other
failure (a malformed packet, an OS error, a bug) is handed back to
``SFTPServerHandler._process_packet`` (see :meth:`_reply_failure`), so every
status code and message stays asyncssh's. tests/gateway/test_sftp_lean.py
compares the replies byte for byte.

Measured (bench/bench_treecpu.py, 4 KiB files, like-for-like): 11-17 % fewer
Python calls per file over sftp and scp; a download's server CPU -8 to -15 %
(docs/performance.md has the rounds).

Every asyncssh member copied or relied on is in :data:`USES`, pinned by
tests/test_tuning.py.
"""

from __future__ import annotations

import inspect
import logging
import types
from typing import Any

import asyncssh
from asyncssh import sftp as _sftp
from asyncssh import stream as _stream
from asyncssh.constants import (
    FX_OK,
    FXP_CLOSE,
    FXP_DATA,
    FXP_FSETSTAT,
    FXP_HANDLE,
    FXP_OPEN,
    FXP_READ,
    FXP_STATUS,
    FXP_WRITE,
)
from asyncssh.packet import SSHPacket, String, UInt32

from conduit._asyncssh import records

SFTPServerHandler = _sftp.SFTPServerHandler
_DEBUG = logging.DEBUG
#: What a coroutine is: the server's methods are ``async def``, so their result is
#: awaited without ``inspect.isawaitable``'s three calls (anything else still asks it).
_Coroutine = types.CoroutineType
#: SFTP v3 attributes with no flags set: what every download's OPEN carries.
_NO_ATTRS = UInt32(0)

#: FX_OK with empty message and language tag: the reply to a write or a close.
_OK = UInt32(FX_OK) + String("") + String("")

#: Private members of asyncssh's SFTP server handler copied or relied on here
#: (the send path, ``SFTPHandler.send_packet``, is pinned by tuning).
USES: dict[str, Any] = {
    "SFTPServerHandler._process_open": SFTPServerHandler._process_open,
    "SFTPServerHandler._process_read": SFTPServerHandler._process_read,
    "SFTPServerHandler._process_write": SFTPServerHandler._process_write,
    "SFTPServerHandler._process_close": SFTPServerHandler._process_close,
    "SFTPServerHandler._process_fsetstat": SFTPServerHandler._process_fsetstat,
    "SFTPServerHandler._get_next_handle": SFTPServerHandler._get_next_handle,
    "SFTPHandler.logger": _sftp.SFTPHandler.logger.fget,  # type: ignore[attr-defined]
    "SFTPAttrs.decode": asyncssh.SFTPAttrs.decode,
    "SSHReader.__init__": _stream.SSHReader.__init__,
    "SSHStreamSession.read": _stream.SSHStreamSession.read,
    "SSHStreamSession._block_read": _stream.SSHStreamSession._block_read,
    "SSHStreamSession._unblock_read": _stream.SSHStreamSession._unblock_read,
    "SSHStreamSession._maybe_resume_reading": _stream.SSHStreamSession._maybe_resume_reading,
    "SSHStreamSession.data_received": _stream.SSHStreamSession.data_received,
    "SSHStreamSession.connection_lost": _stream.SSHStreamSession.connection_lost,
}


class _Replay(Exception):
    """Carries a lean handler's failure into asyncssh's error mapping."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc


class LeanSFTPHandler(SFTPServerHandler):
    """asyncssh's SFTP server handler with lean file requests; see the module."""

    _replaying: Exception | None = None

    # -- receiving: a whole message already buffered is taken at once -------------------
    # asyncssh's way, two readexactly() calls (length, then body), takes the stream's
    # read lock twice and walks its buffer twice: about 30 Python calls a request. A
    # request arrives whole in one channel data packet, so here it is cut off the
    # front of the session's buffer as SSHStreamSession.read would; anything else
    # (a message split across packets, an end of file or an error queued in the
    # buffer, another reader) is left to readexactly().

    async def next_message(self, limit: int) -> bytes | None:
        """The next SFTP message (without its length) if it arrives whole, waiting
        for data if none is buffered; None: read it with ``readexactly``.
        ``limit``: the largest message accepted (longer raises SFTPBadMessage)."""
        assert self._reader is not None
        session: Any = self._reader._session
        if not session._recv_buf[None] and not session._eof_received:
            if session._read_locks[None].locked():
                return None
            await session._block_read(None)
        return self._buffered(session, limit)

    def _buffered(self, session: Any, limit: int) -> bytes | None:
        chunks = session._recv_buf[None]
        if not chunks or session._read_locks[None].locked():
            return None
        first = chunks[0]
        if type(first) is not bytes or len(first) < 4:
            return None  # an exception (end of file, a signal) or a split header
        end = 4 + int.from_bytes(first[:4], "big")
        if end - 4 > limit:
            raise asyncssh.SFTPBadMessage(f"SFTP message over {limit} bytes")
        if len(first) < end:
            return None
        if len(first) == end:
            chunks.pop(0)
        else:
            chunks[0] = first[end:]
        session._recv_buf_len -= end
        session._maybe_resume_reading()
        return first[4:end]

    def _plain(self) -> bool:
        """Serve this request the lean way: v3/v4 and asyncssh's debug log off
        (``_logger``: what the ``logger`` property returns, one call less)."""
        return self._version < 5 and not self._logger.isEnabledFor(_DEBUG)

    async def _process_packet(self, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        reply = _REPLIES.get(pkttype)
        if reply is None or not self._plain():
            return await super()._process_packet(pkttype, pktid, packet)
        handler: Any = self._packet_handlers[pkttype]
        try:
            result: Any = await handler(self, packet)
        except asyncssh.SFTPError as exc:  # EOF ends every download: its own branch, as asyncssh's
            self.send_packet(FXP_STATUS, pktid, UInt32(pktid), exc.encode(self._version))
            return
        except Exception as exc:  # asyncssh maps every Exception (not BaseException)
            return await self._reply_failure(pkttype, pktid, packet, exc)
        if reply == FXP_DATA:
            data, _ = result  # at_end is only sent from version 6 on
            self.send_packet(FXP_DATA, pktid, UInt32(pktid), UInt32(len(data)), data)
        elif reply == FXP_HANDLE:
            self.send_packet(FXP_HANDLE, pktid, UInt32(pktid), String(result))
        else:
            self.send_packet(FXP_STATUS, pktid, UInt32(pktid), _OK)

    async def _reply_failure(
        self, pkttype: int, pktid: int, packet: SSHPacket, exc: Exception
    ) -> None:
        """Answer ``exc`` exactly as asyncssh would: its ``_process_packet`` runs the
        same handler (found in the same table, so a NotImplementedError names the
        same operation), which raises ``exc`` again at once."""
        self._replaying = exc
        try:
            await super()._process_packet(pkttype, pktid, packet)
        finally:
            self._replaying = None

    def _replay(self) -> None:
        exc, self._replaying = self._replaying, None
        if exc is not None:
            raise exc

    # Each below: asyncssh 2.24.1's method of the same name, less its debug
    # message and casts, for versions below 5 (``_plain``); anything else runs
    # asyncssh's own.

    async def _process_open(self, packet: SSHPacket) -> bytes:
        self._replay()
        if not self._plain():
            return await SFTPServerHandler._process_open(self, packet)
        path = packet.get_string()
        pflags = packet.get_uint32()
        if self._version == 3 and packet.get_remaining_payload() == _NO_ATTRS:
            packet.get_uint32()  # decode()'s answer without its ~35 calls (see records)
            attrs = records.empty_attrs()
        else:
            attrs = asyncssh.SFTPAttrs.decode(packet, self._version)
        packet.check_end()
        result = self._server.open(path, pflags, attrs)
        if type(result) is _Coroutine or inspect.isawaitable(result):
            result = await result
        handle: bytes = self._get_next_handle()
        self._file_handles[handle] = result
        return handle

    async def _process_read(self, packet: SSHPacket) -> tuple[bytes, bool]:
        self._replay()
        if not self._plain():
            return await SFTPServerHandler._process_read(self, packet)
        handle = packet.get_string()
        offset = packet.get_uint64()
        length = packet.get_uint32()
        packet.check_end()
        file_obj = self._file_handles.get(handle)
        if not file_obj:
            raise asyncssh.SFTPInvalidHandle("Invalid file handle")
        result = self._server.read(file_obj, offset, length)
        if type(result) is _Coroutine or inspect.isawaitable(result):
            result = await result
        if not result:
            raise asyncssh.SFTPEOFError
        return result, False

    async def _process_write(self, packet: SSHPacket) -> int:
        self._replay()
        if not self._plain():
            return await SFTPServerHandler._process_write(self, packet)
        handle = packet.get_string()
        offset = packet.get_uint64()
        data = packet.get_string()
        packet.check_end()
        file_obj = self._file_handles.get(handle)
        if not file_obj:
            raise asyncssh.SFTPInvalidHandle("Invalid file handle")
        result = self._server.write(file_obj, offset, data)
        if type(result) is _Coroutine or inspect.isawaitable(result):
            result = await result
        return result

    async def _process_close(self, packet: SSHPacket) -> None:
        self._replay()
        if not self._plain():
            return await SFTPServerHandler._process_close(self, packet)
        handle = packet.get_string()
        packet.check_end()
        file_obj = self._file_handles.pop(handle, None)
        if file_obj:
            result = self._server.close(file_obj)
            if type(result) is _Coroutine or inspect.isawaitable(result):
                await result
            return
        if self._dir_handles.pop(handle, None) is not None:
            return
        raise asyncssh.SFTPInvalidHandle("Invalid file handle")

    async def _process_fsetstat(self, packet: SSHPacket) -> None:
        self._replay()
        if not self._plain():
            return await SFTPServerHandler._process_fsetstat(self, packet)
        handle = packet.get_string()
        attrs = asyncssh.SFTPAttrs.decode(packet, self._version)
        packet.check_end()
        file_obj = self._file_handles.get(handle)
        if not file_obj:
            raise asyncssh.SFTPInvalidHandle("Invalid file handle")
        result = self._server.fsetstat(file_obj, attrs)
        if type(result) is _Coroutine or inspect.isawaitable(result):
            await result

    _packet_handlers = {
        **SFTPServerHandler._packet_handlers,
        FXP_OPEN: _process_open,  # type: ignore[dict-item]
        FXP_READ: _process_read,  # type: ignore[dict-item]
        FXP_WRITE: _process_write,  # type: ignore[dict-item]
        FXP_CLOSE: _process_close,  # type: ignore[dict-item]
        FXP_FSETSTAT: _process_fsetstat,  # type: ignore[dict-item]
    }


#: The reply type of each lean request (asyncssh's ``_return_types``; FXP_STATUS
#: for those it does not list).
_REPLIES: dict[int, int] = {
    FXP_OPEN: FXP_HANDLE,
    FXP_READ: FXP_DATA,
    FXP_WRITE: FXP_STATUS,
    FXP_CLOSE: FXP_STATUS,
    FXP_FSETSTAT: FXP_STATUS,  # scp (SFTP mode) sets each upload's mode
}
