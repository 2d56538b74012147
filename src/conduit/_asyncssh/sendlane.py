"""The send lane: a channel's data packets sealed and written in one step (AES-GCM, ChaCha20).

asyncssh sends each MSG_CHANNEL_DATA packet through four layers of Python
(the channel's ``send_packet``, the connection's ``send_packet``, its
``_send`` and the packet logger), each with its own checks and small helper
calls: about a dozen Python calls per packet, for a 1 GiB download 32,768
packets of 32 KiB, and a handful per small file. While a connection is in
its ordinary state the outcome of most of those checks is known, so
:func:`_send_data` builds the packet itself (header, padding, the seal of an
AEAD cipher: AES-GCM, run-time change 12, or ChaCha20-Poly1305, 15, each
as :mod:`.aead` does it; one ``transport.write``) and keeps the same books as
:func:`conduit._asyncssh.tuning._send_packet`, the copy of
``SSHConnection.send_packet`` it stands in for: the send sequence number, the
bytes counted towards the next key exchange.

The lane is taken only when a packet would go through that copy exactly so
(see :func:`_send_data`): AES-GCM or ChaCha20, no compression, key exchange and
authentication complete, nothing deferred, no key exchange due (the byte
count and the rekey time are checked before every packet, as send_packet does),
packet logging off, the transport still there, and the connection's and the
channel's ``send_packet`` the ones installed with the lane. Anything else goes
down the old path for that packet, which starts the key exchange, defers the
packet, logs it or compresses it as before. Strict key exchange
(CVE-2023-48795) touches the send sequence only at MSG_NEWKEYS and before the
first key exchange, neither of which the lane ever sends. Under either AEAD
cipher the old path sends no MSG_IGNORE either (tuning 3), so the wire is the
same byte for byte.

The lane lives in the channel's flush, the one place channel data is cut into
packets (tuning 3b/3d, moved here with it): a buffer longer than a packet is
sent through a memoryview of it and cut once at the end. Because that flush
never changes a queued buffer in place, :class:`HandOverWriter` queues scp's
download chunks (immutable ``bytes``) without SSHChannel.write's copy. The
members replaced are in :data:`ORIGINALS`, the private ones relied on in
:data:`USES` (both pinned by tests/test_tuning.py); :func:`apply` and
:func:`revert` are called by :func:`conduit._asyncssh.tuning.apply` and
:func:`~conduit._asyncssh.tuning.revert`.
"""

from __future__ import annotations

import struct
import time
from typing import Any

from asyncssh import channel as _channel
from asyncssh import connection as _connection
from asyncssh import packet as _packet
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, MSG_CHANNEL_EXTENDED_DATA
from asyncssh.logging import SSHLogger
from asyncssh.stream import SSHWriter

from conduit._asyncssh import aead, gcm

_SSHChannel = _channel.SSHChannel
_SSHConnection = _connection.SSHConnection
_sealers = aead.SEALERS
_chan_write = _SSHChannel.write

ORIGINALS: dict[str, Any] = {
    "SSHChannel._flush_send_buf": _SSHChannel._flush_send_buf,
}

#: Relied on: what tuning's send_packet copy does and the lane repeats (its
#: original), the packet log it skips (tuning 1: nothing below level 3), the
#: state the connection's ``__init__``, key exchange and NEWKEYS handling set
#: and the lane reads and writes, the deferred packets sent after a key
#: exchange, the IV update the lane does inline, and the channel's state.
USES: dict[str, Any] = {
    "SSHConnection.send_packet": _SSHConnection.send_packet,
    "SSHConnection._send": _SSHConnection._send,
    "SSHConnection.__init__": _SSHConnection.__init__,
    "SSHConnection.send_newkeys": _SSHConnection.send_newkeys,
    "SSHConnection._send_kexinit": _SSHConnection._send_kexinit,
    "SSHConnection._send_deferred_packets": _SSHConnection._send_deferred_packets,
    "SSHConnection._process_newkeys": _SSHConnection._process_newkeys,
    "SSHPacketLogger.log_sent_packet": _packet.SSHPacketLogger.log_sent_packet,
    "SSHChannel.__init__": _SSHChannel.__init__,
    "SSHChannel.send_packet": _SSHChannel.send_packet,
    "SSHChannel._pause_resume_writing": _SSHChannel._pause_resume_writing,
    "SSHChannel._close_send": _SSHChannel._close_send,
    # HandOverWriter queues as write() does, with the writer's datatype.
    "SSHChannel.write": _SSHChannel.write,
    "SSHWriter.__init__": SSHWriter.__init__,
    **gcm.USES,
}

#: padding length, message type, recipient channel, data length
_PREFIX = struct.Struct(">BBII")
_UINT32 = struct.Struct(">I")
#: The lane's padding (shared with tuning 3's pool); a name of its own, so a test
#: can count the packets the lane builds.
_padding = gcm.padding

# The connection's and channel's send_packet the lane stands in for: those
# installed when it was applied (tuning's). A subclass's own, or a wrapper put
# in later, gets every packet as before.
_behind: list[Any] = [None, None]


def _flush_send_buf(self: Any) -> None:
    # A copy of SSHChannel._flush_send_buf (asyncssh 2.24.1); the changes: the
    # data goes out through _send_data below (the lane, or send_packet as
    # length + data rather than String(data), one copy less: tuning 3b), and
    # (3d) a buffer longer than one packet is read through a memoryview and cut
    # once at the end, not copied out and shifted packet by packet (a 255 KiB
    # SFTP read reply is eight packets). When the send window ends mid-buffer
    # the rest is copied into a new one (a bytearray cannot be resized while a
    # view of it lives, and a deferred packet may hold one); a nested flush
    # (none is known: sending calls back into no channel) leaves the buffer to
    # this one.
    if self._send_buf and getattr(self, "_conduit_flushing", False):
        return
    while self._send_buf and self._send_window:
        buf, datatype = self._send_buf[0]
        size = len(buf)
        if size <= min(self._send_window, self._send_pktsize):
            del self._send_buf[0]
            self._send_buf_len -= size
            self._send_window -= size
            _send_data(self, datatype, buf)
            continue
        sent = 0
        self._conduit_flushing = True
        try:
            with memoryview(buf) as view:
                while sent < size and self._send_window:
                    pktsize = min(self._send_window, self._send_pktsize, size - sent)
                    self._send_buf_len -= pktsize
                    self._send_window -= pktsize
                    _send_data(self, datatype, view[sent : sent + pktsize])
                    sent += pktsize
        finally:
            self._conduit_flushing = False
        if sent == size:
            del self._send_buf[0]
        else:  # the window ran out: the rest in a buffer of its own (views may live on)
            self._send_buf[0] = (buf[sent:], datatype)

    self._pause_resume_writing()

    if not self._send_buf:
        if self._send_state == "eof_pending":
            self.send_packet(MSG_CHANNEL_EOF)
            self._send_state = "eof"
        elif self._send_state == "close_pending":
            self._close_send()


def _send_data(chan: Any, datatype: int | None, data: Any) -> None:
    """One packet of channel data: through the lane when nothing is unusual."""
    conn = chan._conn
    enc = conn._send_encryption
    recipient = chan._send_chan
    transport = conn._transport
    if (
        datatype is None
        and type(enc) in _sealers
        and recipient is not None
        and transport is not None
        and conn._kex_complete
        and conn._auth_complete
        and not conn._deferred_packets
        and conn._compressor is None
        and conn._rekey_bytes_sent < conn._rekey_bytes
        and not (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
        and SSHLogger._debug_level < 3
        and type(conn).send_packet is _behind[0]
        and type(chan).send_packet is _behind[1]
    ):
        # What tuning's _send_packet does for this packet, in the same order:
        # pad to the block size, seal (the cipher's own way, see aead: GCM's IV
        # moves on, ChaCha20's nonce is the sequence number), write, count the
        # sequence number and the rekey bytes.
        datalen = len(data)
        padlen = -(conn._send_enchdrlen + 9 + datalen) % conn._send_blocksize
        if padlen < 4:
            padlen += conn._send_blocksize
        pktlen = 10 + datalen + padlen
        plain = b"".join(
            (_PREFIX.pack(padlen, MSG_CHANNEL_DATA, recipient, datalen), data, _padding(padlen))
        )
        packet = _sealers[type(enc)](enc, _UINT32.pack(pktlen), plain, conn._send_seq)
        try:  # noqa: SIM105 (a with block per packet costs more)
            transport.write(packet)
        except ConnectionError:  # pragma: no cover (as SSHConnection._send)
            pass
        conn._send_seq = (conn._send_seq + 1) & 0xFFFFFFFF
        conn._rekey_bytes_sent += pktlen
    elif datatype is None:
        chan.send_packet(MSG_CHANNEL_DATA, _packet.UInt32(len(data)), data)
    else:
        chan.send_packet(
            MSG_CHANNEL_EXTENDED_DATA, _packet.UInt32(datatype), _packet.UInt32(len(data)), data
        )


# -- SCP's download chunks handed over, not copied -----------------------------------------
# SSHChannel.write copies every write into a bytearray of its own before
# queueing it: for an scp download, every byte once more (255 KiB chunks).
# Immutable bytes need no copy while this module's flush is the one that reads
# the queue (it never changes an entry in place; asyncssh's own flush does).
# The same is done for SFTP's big replies by tuning 3e.


class HandOverWriter:
    """An ``SSHWriter[bytes]`` on stdout whose ``bytes`` writes are queued on the
    channel as they are, as ``SSHChannel.write`` would queue its copy of them;
    anything else (another type, the debug log at level 2 and up, asyncssh's
    own write or flush installed, a closed channel) goes through ``write``."""

    def __init__(self, writer: SSHWriter[bytes]) -> None:
        self._writer = writer
        self._chan: Any = writer.channel
        self._stdout = writer._datatype is None

    def write(self, data: bytes) -> None:
        chan = self._chan
        if (
            type(data) is bytes
            and self._stdout
            and chan._send_state == "open"
            and chan._encoding is None
            and type(chan).write is _chan_write
            and type(chan)._flush_send_buf is _flush_send_buf
            and SSHLogger._debug_level < 2
        ):
            if data:
                chan._send_buf.append((data, None))
                chan._send_buf_len += len(data)
                chan._flush_send_buf()
        else:
            self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()


PATCHES: dict[str, tuple[Any, str, Any]] = {
    "SSHChannel._flush_send_buf": (_SSHChannel, "_flush_send_buf", _flush_send_buf),
}


def apply() -> None:
    """Install the flush; the lane stands in for the send_packet methods installed now."""
    _behind[:] = [_SSHConnection.send_packet, _SSHChannel.send_packet]
    for owner, name, replacement in PATCHES.values():
        setattr(owner, name, replacement)


def revert() -> None:
    """asyncssh's flush back; the lane is off. (For tests and embedders, between
    transfers: asyncssh's flush cuts a queued buffer in place, which a
    :class:`HandOverWriter`'s queued ``bytes`` do not allow.)"""
    for key, (owner, name, _) in PATCHES.items():
        setattr(owner, name, ORIGINALS[key])
    _behind[:] = [None, None]
