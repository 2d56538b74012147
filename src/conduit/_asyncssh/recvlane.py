"""A lean receive lane for channel data under AES-GCM and ChaCha20-Poly1305 (run-time
changes 11 and 15).

asyncssh handles every received packet the same generic way: the header is
cut and decrypted (under GCM it is the clear length), the body cut, joined
and decrypted, an ``SSHPacket`` object built, the type looked up in four
ranges, the channel number parsed, the packet logged (or not), dispatched
through the channel's handler table, the data parsed out with a copy, its
length logged at debug level 2, accepted, delivered, and the sequence number
advanced in a method of its own. Profiled on an upload of 32 KiB packets
(OpenSSH's size), that is ~51 calls per packet under cProfile (26 here, two
of them Python functions); a GiB is 32,768 packets.

Here :func:`_recv_data` (a copy of ``SSHConnection._recv_data``, asyncssh
2.24.1) takes a whole packet off the receive buffer itself when it is a
``MSG_CHANNEL_DATA`` or ``MSG_CHANNEL_WINDOW_ADJUST`` for an open channel
under an AEAD cipher (AES-GCM, or ChaCha20-Poly1305: the cipher stock OpenSSH
clients negotiate), and hands the data to the channel's session directly. It
keeps every check asyncssh's path makes on such a packet, in the same order, and
where one would refuse the packet (or anything is unusual) it *does not
refuse it itself*: it leaves the buffer, the IV and the sequence number as
they were and lets asyncssh's own ``_recv_pkthdr``/``_recv_packet`` take the
same bytes, which then refuse them with asyncssh's own error. What differs
between the two ciphers (the length in clear or encrypted, the nonce an IV
or the sequence number) is opening one packet, in :mod:`.aead`; the rest is
the same for both. So:

- the tag is verified first (a failure leaves the packet to asyncssh, which
  fails it again and disconnects with ``MACError``);
- the length limit (``_max_recv_pktlen``) falls back before anything is read
  (under ChaCha20 the length is decrypted first, as asyncssh does, and only
  once per packet while the rest arrives);
- only encrypted, authenticated, uncompressed connections use the lane, with
  packet and debug logging off (asyncssh logs nothing then either);
- an unknown channel number, a channel not ``open`` for receiving (after EOF
  or close), data beyond the receive window, a malformed packet (trailing or
  missing bytes, a padding length of zero), extended data and every other
  type go the generic way;
- the sequence number advances as ``_finish_recv_packet`` does (only while
  the transport lives); the strict-kex reset at ``MSG_NEWKEYS`` is on the
  generic path, which every key exchange packet takes;
- rekeying: asyncssh counts only bytes *sent* towards ``rekey_bytes`` and
  triggers the rekey in ``send_packet``; a window adjust the lane causes is
  sent through ``send_packet`` as before, so that accounting is unchanged.

A channel or connection class that overrides what the lane stands in for
(``process_packet``, the handler table's entries, ``_accept_data``,
``_deliver_data``, the receive methods) is left to the generic path. The
members copied or relied on are in :data:`ORIGINALS` and :data:`USES`,
pinned by tests/test_tuning.py.
"""

from __future__ import annotations

from typing import Any

from asyncssh import channel as _channel
from asyncssh import connection as _connection
from asyncssh import packet as _packet
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.logging import SSHLogger
from asyncssh.misc import DisconnectError

from conduit._asyncssh import aead

_SSHConnection = _connection.SSHConnection
_SSHChannel = _channel.SSHChannel
_openers = aead.OPENERS

ORIGINALS: dict[str, Any] = {
    "SSHConnection._recv_data": _SSHConnection._recv_data,
}

#: Not replaced, but what the lane stands in for (the generic path it must
#: agree with) or relies on.
USES: dict[str, Any] = {
    "SSHConnection._recv_packet": _SSHConnection._recv_packet,
    "SSHConnection._finish_recv_packet": _SSHConnection._finish_recv_packet,
    "SSHConnection._reset_keepalive_timer": _SSHConnection._reset_keepalive_timer,
    "SSHPacketHandler.process_packet": _packet.SSHPacketHandler.process_packet,
    "SSHChannel._packet_handlers": _SSHChannel._packet_handlers,
    "SSHChannel._process_data": _SSHChannel._process_data,
    "SSHChannel._process_window_adjust": _SSHChannel._process_window_adjust,
    "SSHChannel._accept_data": _SSHChannel._accept_data,
    "SSHChannel._deliver_data": _SSHChannel._deliver_data,
}

_orig_recv_data = _SSHConnection._recv_data
_process_packet = _packet.SSHPacketHandler.process_packet
_log_received = _packet.SSHPacketLogger.log_received_packet
_process_data = _SSHChannel.__dict__["_process_data"]
_process_window_adjust = _SSHChannel.__dict__["_process_window_adjust"]
_accept_data = _SSHChannel.__dict__["_accept_data"]
_deliver_data = _SSHChannel.__dict__["_deliver_data"]

#: Per class: may the lane stand in for its generic handling?
_channel_ok: dict[type, bool] = {}
_conn_ok: dict[type, bool] = {}


def _lane_channel(cls: type) -> bool:
    """Whether the lane may stand in for ``cls``'s handling (cached per class)."""
    handlers = getattr(cls, "_packet_handlers", {})
    ok = _channel_ok[cls] = bool(
        getattr(cls, "process_packet", None) is _process_packet
        and getattr(cls, "log_received_packet", None) is _log_received
        and handlers.get(MSG_CHANNEL_DATA) is _process_data
        and handlers.get(MSG_CHANNEL_WINDOW_ADJUST) is _process_window_adjust
        and getattr(cls, "_accept_data", None) is _accept_data
        and getattr(cls, "_deliver_data", None) is _deliver_data
    )
    return ok


def _lane_conn(cls: type) -> bool:
    """Whether the lane may stand in for ``cls``'s receive path (cached per class)."""
    ok = _conn_ok[cls] = bool(
        getattr(cls, "_recv_packet", None) is _SSHConnection.__dict__["_recv_packet"]
        and getattr(cls, "_finish_recv_packet", None)
        is _SSHConnection.__dict__["_finish_recv_packet"]
    )
    return ok


def _recv_data(self: Any) -> None:
    """A copy of SSHConnection._recv_data (asyncssh 2.24.1), the lane added."""
    self._reset_keepalive_timer()

    # pylint: disable=broad-except
    try:
        while self._inpbuf:
            # Conduit: a whole channel data packet under an AEAD cipher, when
            # nothing is unusual.
            handler = self._recv_handler
            if (
                type(self._recv_encryption) in _openers
                and self._auth_complete
                and not self._decompressor
                and self._transport
                and SSHLogger._debug_level < 2
                and getattr(handler, "__func__", None) is type(self)._recv_pkthdr
                and (_conn_ok.get(type(self)) or _lane_conn(type(self)))
            ):
                taken = _take(self)
                if taken:
                    continue
                if taken is not None:
                    break  # the rest of the packet is still to come
            if not handler():
                break
    except DisconnectError as exc:
        self._send_disconnect(exc.code, exc.reason, exc.lang)
        self._force_close(exc)
    except Exception:
        self.internal_error()


def _take(self: Any) -> bool | None:
    """Handle the packet at the front of the buffer: True when done, False when
    it is not all here yet, None to leave it (untouched) to asyncssh's path."""
    buf = self._inpbuf
    enc = self._recv_encryption
    opened = _openers[type(enc)](self, enc, buf)
    if opened.__class__ is not tuple:
        return opened  # type: ignore[return-value]  # (a tuple is not returned)
    plain, end, next_iv = opened

    # plain: padding length, payload (type, channel, ...), padding. asyncssh
    # cuts the payload as plain[1:-padding]: no padding at all leaves it empty.
    # An empty packet (length 0, sealed) has no padding length byte either.
    if not plain:
        return None
    size = len(plain) - plain[0]
    if size < 10 or not plain[0]:
        return None
    pkttype = plain[1]
    if pkttype == MSG_CHANNEL_DATA:
        datalen = int.from_bytes(plain[6:10], "big")
        if 10 + datalen != size:
            return None  # short or trailing bytes: asyncssh's decode error
    elif pkttype != MSG_CHANNEL_WINDOW_ADJUST or size != 10:
        return None

    chan = self._channels.get(int.from_bytes(plain[2:6], "big"))
    if chan is None or not (_channel_ok.get(type(chan)) or _lane_channel(type(chan))):
        return None  # unknown channel: asyncssh's error
    if pkttype == MSG_CHANNEL_DATA:
        # _process_data's checks; each failure is asyncssh's to raise.
        if chan._recv_state != "open" or datalen > chan._recv_window:
            return None
    elif chan._recv_state not in {"open", "eof_pending", "eof"}:
        return None

    # Taken: as _recv_packet does after decrypting (under AES-GCM the IV moves
    # on; ChaCha20's nonce is the sequence number, moved on below; the packet
    # leaves the buffer), then what the handler does.
    if next_iv is not None:
        enc._cipher._iv = next_iv
    self._inpbuf = buf[end:]
    seq = self._recv_seq

    if pkttype == MSG_CHANNEL_DATA:
        # SSHChannel._accept_data; _deliver_data for the usual case inline.
        if datalen and chan._send_state not in {"close_pending", "closed"}:
            data = plain[10:size]
            chan._recv_window -= datalen
            if chan._recv_paused:
                chan._recv_buf.append((data, None))
            elif (
                chan._encoding
                or chan._session is None
                or chan._recv_window < chan._init_recv_window / 2
            ):
                chan._deliver_data(data, None)
            else:
                chan._session.data_received(data, None)
    else:
        # SSHChannel._process_window_adjust (its debug line is off: level < 2).
        chan._send_window += int.from_bytes(plain[6:10], "big")
        chan._flush_send_buf()

    # SSHConnection._finish_recv_packet for a channel packet.
    self._auth_final = True
    if self._transport:
        self._recv_seq = (seq + 1) & 0xFFFFFFFF
    return True


def install() -> None:
    """Put the lane in (idempotent); :func:`conduit._asyncssh.tuning.apply` calls it."""
    _channel_ok.clear()
    _conn_ok.clear()
    _SSHConnection._recv_data = _recv_data  # type: ignore[method-assign]


def uninstall() -> None:
    """asyncssh's own receive loop again (idempotent)."""
    _channel_ok.clear()
    _conn_ok.clear()
    _SSHConnection._recv_data = _orig_recv_data  # type: ignore[method-assign]
