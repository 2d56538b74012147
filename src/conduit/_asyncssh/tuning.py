"""Run-time changes to asyncssh for throughput, kept in one place.

Every change here is tied to the pinned asyncssh version; tests/test_tuning.py
fails when an upgrade makes one of them stale (it pins a hash of the source of
every function replaced here and of every private member the copies rely on,
and checks that each change is in effect, that :func:`revert` restores the
originals, and that the wire format is kept).

None of them changes what goes on the wire except for dropping the empty
MSG_IGNORE packets asyncssh sends ahead of every packet, and only under AEAD
ciphers; see ``_send_packet``. Figures are from bench/bench_gateway.py, 1 GiB over
loopback with OpenSSH 9.2 clients, 2 cores (medians of 3 runs), or from
the measurements quoted here where they say so. Measured here, Conduit MB/s for
scp / scp -O / sftp (the box is shared, so single rows vary by +-20 %):

  before any change     down 226 / 238 / 202   up 262 / 224 / 220
  1-4 (first version)   down 452 / 473 / 331   up 335 / 546 / 385
  + 3b, 3c and listen(line_editor=False)
                        down 459 / 646 / 514   up 439 / 492 / 452

The changes here, each explained where it is made:

  1   packet logging formatted only when packet logging is on
  2   one AESGCM object per key instead of one per packet (in :mod:`.gcm`)
  3   no empty MSG_IGNORE before each packet under AEAD ciphers; one join
      instead of six copies per GCM packet; padding from a pooled urandom
  3b  channel data passed as length + data (one copy less per packet)
  3c  SFTP replies built with one join
  3d  a channel buffer longer than a packet sent through a memoryview, not
      copied out and shifted packet by packet (3b and 3d in :mod:`.sendlane`)
  3e  an SFTP reply joined straight into the channel's buffer, not joined
      and then copied into it by SSHChannel.write (a read's data: one copy
      less; a small reply: write()'s calls less)
  4   the receive buffer held as a memoryview under AES-GCM (no re-slicing;
      in :mod:`.gcm`) and ChaCha20-Poly1305 (with 14)
  8   log messages built only when their level is on (two per SFTP request)
  11  channel data and window adjusts received under AES-GCM without asyncssh's
      generic packet path (in :mod:`.recvlane`)
  12  the send lane: channel data sealed and written in one step under
      AES-GCM, and scp's download chunks queued without SSHChannel.write's
      copy (in :mod:`.sendlane`, applied and reverted with the rest)
  13  the keepalive timer re-armed when it fires, not on every read (its
      deadline moved instead; in :mod:`.keepalive`)
  14  ChaCha20-Poly1305 sealed and opened with one keystream per packet for
      the Poly1305 key and the body (in :mod:`.chacha`)
  15  both lanes under ChaCha20-Poly1305 too, the cipher stock OpenSSH
      clients negotiate (the per-cipher step in :mod:`.aead`)

glibc's malloc thresholds (5 in earlier lists) are the process's, not
asyncssh's: ``conduit serve`` fixes them, see :mod:`conduit.gateway.process`.
The package's other modules are listed in its ``__init__``; docs/asyncssh.md
has the whole list for readers of the documentation.
"""

from __future__ import annotations

import time
from typing import Any

import asyncssh
from asyncssh import channel as _channel
from asyncssh import connection as _connection
from asyncssh import encryption as _encryption
from asyncssh import packet as _packet
from asyncssh import sftp as _sftp
from asyncssh import stream as _stream
from asyncssh.constants import (
    MSG_DEBUG,
    MSG_IGNORE,
    MSG_KEX_LAST,
    MSG_NEWKEYS,
    MSG_SERVICE_ACCEPT,
    MSG_SERVICE_REQUEST,
    MSG_USERAUTH_BANNER,
    MSG_USERAUTH_LAST,
)
from asyncssh.logging import SSHLogger
from asyncssh.misc import CompressionError, ProtocolError
from asyncssh.sftp import SFTPNoConnection

from conduit._asyncssh import chacha, gcm, keepalive, kexinit, recvlane, sendlane

PINNED = "2.24.1"

_SSHConnection = _connection.SSHConnection
_GCMEncryption = gcm.GCMEncryption

# AEAD transports: every packet is encrypted and authenticated as a whole
# with a fresh nonce, so there is no CBC chaining state to protect.
_AEAD = (_encryption.GCMEncryption, _encryption.ChachaEncryption)

# The originals, for the test that fails when an upgrade changes them.
ORIGINALS: dict[str, Any] = {
    "SSHConnection.send_packet": _SSHConnection.send_packet,
    "SSHPacketLogger._log_packet": _packet.SSHPacketLogger._log_packet,
    "SSHChannel.send_packet": _channel.SSHChannel.send_packet,
    "SFTPHandler.send_packet": _sftp.SFTPHandler.send_packet,
    "SSHLogger.log": SSHLogger.log,
    **gcm.ORIGINALS,
    **keepalive.ORIGINALS,
    # Wrapped by kexinit.py (first_kex_packet_follows, negotiated algorithms).
    "SSHConnection._process_kexinit": kexinit.ORIGINAL,
}

#: Not replaced, but the copies above use them (private methods they call, the
#: ``__init__`` and NEWKEYS handlers that set the private state they read and
#: write), or 4 relies on them slicing the input buffer as they do.
USES: dict[str, Any] = {
    "SSHConnection.__init__": _SSHConnection.__init__,
    "SSHConnection.send_newkeys": _SSHConnection.send_newkeys,
    "SSHConnection._process_newkeys": _SSHConnection._process_newkeys,
    "SSHConnection._send_deferred_packets": _SSHConnection._send_deferred_packets,
    "SSHConnection._send": _SSHConnection._send,
    "SSHConnection._send_kexinit": _SSHConnection._send_kexinit,
    "SSHChannel.__init__": _channel.SSHChannel.__init__,
    "SSHChannel._pause_resume_writing": _channel.SSHChannel._pause_resume_writing,
    "SSHChannel._close_send": _channel.SSHChannel._close_send,
    "SFTPHandler.__init__": _sftp.SFTPHandler.__init__,
    # 3e appends to the channel's buffer as write() does, with the writer's datatype.
    "SSHChannel.write": _channel.SSHChannel.write,
    "SSHWriter.__init__": _stream.SSHWriter.__init__,
    **gcm.USES,
    **keepalive.USES,
}
_orig_log_packet = _packet.SSHPacketLogger._log_packet
_chan_write = _channel.SSHChannel.write
_orig_log = SSHLogger.log


# -- 1. no per-packet log formatting while packet logging is off ------------------------
# asyncssh builds the packet's name and a "N bytes" string for every packet sent
# and received, then SSHLogger.packet() drops it unless the debug level is 3.
# Checking the level first does the same thing. Measured: 7.5 % of a download's
# server CPU.


def _log_packet(
    self: Any, msg: str, pkttype: int, pktid: int | None, packet: Any, note: str
) -> None:
    if SSHLogger._debug_level >= 3:
        _orig_log_packet(self, msg, pkttype, pktid, packet, note)


# -- 3. sending: no MSG_IGNORE under AEAD ciphers, fewer copies, pooled padding ----------
# asyncssh sends an empty MSG_IGNORE before every connection-layer packet. That
# is RFC 4251 section 9.3.1's countermeasure to the chosen-plaintext attack on
# SSH's CBC mode (Dai, Rogaway; Bellare-Kohno-Namprempre 2002): with CBC the next
# packet's IV is the last ciphertext block, known to an observer, and an ignore
# packet in between makes it unpredictable. (Albrecht-Paterson-Watson 2009 is a
# different CBC attack, on the encrypted length field; ignore packets do not
# stop it.) Under AES-GCM and chacha20-poly1305 each packet is sealed
# with its own nonce and tag; there is no IV chaining to protect, which is why
# OpenSSH never sends these packets. We keep them for every non-AEAD cipher
# (CBC, CTR + MAC), exactly as asyncssh does. Measured: +31 % on downloads alone
#: half the packets, encryptions and send() calls.
# The same function builds a GCM packet with one join and one concatenation
# instead of six copies, and takes padding from a pool of os.urandom bytes
# (:func:`.gcm.padding`, shared with the send lane).


def _send_packet(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
    """A copy of SSHConnection.send_packet (asyncssh 2.24.1); changes marked "Conduit".

    The copy carries asyncssh's security logic with it, notably the strict key
    exchange sequence numbers (``_strict_kex``: the send sequence reset at
    MSG_NEWKEYS, the rollover refused before the first key exchange), asyncssh's
    fix for CVE-2023-48795 ("Terrapin"). A fix asyncssh makes to send_packet
    therefore does not reach Conduit by upgrading: it must be ported here.

    Adopting an asyncssh security release (or any upgrade):

    1. Diff the old and new release's source of ``SSHConnection.send_packet``
       and of every other member pinned in :mod:`conduit._asyncssh.pins`
       (``tests/test_tuning.py`` names each one that changed: its
       ``test_original_unchanged[<member>]`` case fails, and
       ``test_pinned_version`` fails on the version alone).
    2. Re-derive each copy in this package from the new original (this
       function, ``_sftp_send_packet``, the GCM ones in :mod:`.gcm`, the flush
       and the send lane in :mod:`.sendlane`, which repeats this function's
       books for channel data),
       keeping only the changes marked "Conduit"; re-check the wrappers
       (kexinit, authwatch, sftpserver, channel) against what they rely on.
    3. Refresh ``src/conduit/_asyncssh/patches/*.diff`` against the new
       release (its README says how; tests/test_asyncssh_patches.py checks
       them), then update :data:`PINNED` and the hashes in tests/test_tuning.py.
       Until then :func:`apply` refuses any other version: no stale copy runs.
    """
    if (
        self._auth_complete
        and self._kex_complete
        and (
            self._rekey_bytes_sent >= self._rekey_bytes
            or (self._rekey_seconds and time.monotonic() >= self._rekey_time)
        )
    ):
        self._send_kexinit()
        self._kexinit_sent = True

    if (
        (
            (
                pkttype
                in {
                    MSG_DEBUG,
                    MSG_SERVICE_REQUEST,
                    MSG_SERVICE_ACCEPT,
                }
                or pkttype > MSG_KEX_LAST
            )
            and not self._kex_complete
        )
        or (pkttype == MSG_USERAUTH_BANNER and not (self._auth_in_progress or self._auth_complete))
        or (pkttype > MSG_USERAUTH_LAST and not self._auth_complete)
    ):
        # Conduit: a deferred packet keeps its own bytes (channel data may be a
        # view of the channel's buffer, 3d, which is not to outlive the flush).
        self._deferred_packets.append((pkttype, tuple(map(bytes, args))))
        return

    enc = self._send_encryption
    # Conduit: the ignore packet only where it defends something (non-AEAD).
    if enc and pkttype > MSG_KEX_LAST and not isinstance(enc, _AEAD):
        self.send_packet(MSG_IGNORE, _packet.String(b""))

    is_gcm = type(enc) is _GCMEncryption
    orig_payload: bytes | None = None
    if self._compressor and (self._auth_complete or not self._compress_after_auth):
        orig_payload = _packet.Byte(pkttype) + b"".join(args)
        payload = self._compressor.compress(orig_payload)

        if payload is None:  # pragma: no cover
            raise CompressionError("Compression failed")
        parts: tuple[bytes, ...] = (payload,)
    elif is_gcm:
        # Conduit: the payload's pieces go straight into the one join below.
        parts = (_packet.Byte(pkttype), *args)
    else:
        orig_payload = payload = _packet.Byte(pkttype) + b"".join(args)
        parts = (payload,)
    paylen = sum(map(len, parts))

    padlen = -(self._send_enchdrlen + paylen) % self._send_blocksize
    if padlen < 4:
        padlen += self._send_blocksize

    pktlen = 1 + paylen + padlen
    hdr = _packet.UInt32(pktlen)
    seq = self._send_seq

    if is_gcm:
        # Conduit: header (authenticated, in clear) + ciphertext + tag, as
        # GCMCipher.encrypt_and_sign produces, with three copies instead of eight.
        cipher: Any = enc._cipher
        sealed = cipher._aesgcm.encrypt(
            cipher._iv, b"".join((_packet.Byte(padlen), *parts, gcm.padding(padlen))), hdr
        )
        cipher._update_iv()
        self._send(hdr + sealed)
    elif enc:
        packet = _packet.Byte(padlen) + payload + gcm.padding(padlen)
        packet, mac = enc.encrypt_packet(seq, hdr, packet)
        self._send(packet + mac)
    else:
        self._send(hdr + _packet.Byte(padlen) + payload + gcm.padding(padlen))

    if self._send_seq == 0xFFFFFFFF and not enc:
        self._send_seq = 0
        raise ProtocolError("Sequence rollover before kex complete")

    if pkttype == MSG_NEWKEYS and self._strict_kex:
        self._send_seq = 0
    else:
        self._send_seq = (seq + 1) & 0xFFFFFFFF

    if self._kex_complete:
        self._rekey_bytes_sent += pktlen

    if not handler:
        handler = self

    if orig_payload is None:
        # Only the packet log (debug level 3) looks at it; see 1.
        orig_payload = (
            _packet.Byte(pkttype) + b"".join(args) if SSHLogger._debug_level >= 3 else b""
        )
    handler.log_sent_packet(pkttype, seq, orig_payload)


def _channel_send_packet(self: Any, pkttype: int, *args: bytes) -> None:
    # SSHChannel.send_packet joined its arguments only for the connection to
    # join them again: pass them through (one copy of each data packet less).
    if self._send_chan is None:  # pragma: no cover
        return
    self._conn.send_packet(pkttype, _packet.UInt32(self._send_chan), *args, handler=self)


# -- 3b, 3d: channel data cut into packets in the channel's flush: in :mod:`.sendlane`,
# with the send lane that seals and writes them under AES-GCM.


# -- 3c. SFTP replies built with one join ---------------------------------------------


def _sftp_send_packet(self: Any, pkttype: int, pktid: int | None, *args: bytes) -> None:
    # SFTPHandler.send_packet with one join instead of two concatenations
    # (a 255 KiB read reply was copied twice here).
    if not self._writer:
        raise SFTPNoConnection("Connection not open")
    chan = self._writer.channel
    if chan.is_closing():
        return

    length = 1 + sum(map(len, args))
    parts = (_packet.UInt32(length), _packet.Byte(pkttype), *args)
    if SSHLogger._debug_level >= 2 or type(chan).write is not _chan_write:
        self._writer.write(b"".join(parts))
    else:
        # 3e: the reply joined straight into the channel's buffer, as
        # SSHChannel.write (asyncssh 2.24.1) would append it after copying it
        # once more into a bytearray of its own (a read's data: one copy less);
        # its debug line is only logged at debug level 2. A small reply (a
        # handle, a status, a 4 KiB read) skips write()'s five calls.
        if chan._send_state != "open":
            raise BrokenPipeError("Channel not open for sending")
        chan._send_buf.append((bytearray().join(parts), self._writer._datatype))
        chan._send_buf_len += 4 + length
        chan._flush_send_buf()

    if SSHLogger._debug_level >= 3:
        payload = _packet.Byte(pkttype) + b"".join(args)
        self.log_sent_packet(pkttype, pktid, payload)


# -- 8. a log message built only when it will be logged --------------------------------
# SSHLogger.log converts every argument to text (two closures, a list, bytes
# decoded, SFTP attributes formatted) and only then hands the message to the
# logger, which drops it at the usual levels. asyncssh's SFTP server logs two
# debug messages per request, eight per small file downloaded. Checking the
# level first logs the same messages when it is on.


def _log(self: Any, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
    if self.isEnabledFor(level):
        _orig_log(self, level, msg, *args, **kwargs)


# -- applying ------------------------------------------------------------------------------

PATCHES: dict[str, tuple[Any, str, Any]] = {
    "SSHPacketLogger._log_packet": (_packet.SSHPacketLogger, "_log_packet", _log_packet),
    "SSHConnection.send_packet": (_SSHConnection, "send_packet", _send_packet),
    "SSHChannel.send_packet": (_channel.SSHChannel, "send_packet", _channel_send_packet),
    "SFTPHandler.send_packet": (_sftp.SFTPHandler, "send_packet", _sftp_send_packet),
    "SSHLogger.log": (SSHLogger, "log", _log),
    **gcm.PATCHES,
    **keepalive.PATCHES,
    "SSHConnection._process_kexinit": (
        _SSHConnection,
        "_process_kexinit",
        kexinit.process_kexinit,
    ),
}


def apply() -> None:
    """Apply the run-time changes (idempotent)."""
    if asyncssh.__version__ != PINNED:
        raise RuntimeError(
            f"conduit._asyncssh.tuning is written for asyncssh {PINNED}, "
            f"found {asyncssh.__version__}"
        )
    for owner, name, replacement in PATCHES.values():
        setattr(owner, name, replacement)
    kexinit.install()  # also asyncssh's dispatch table, which holds the function itself
    recvlane.install()  # 11: the receive lane (its own module)
    chacha.apply()  # 14: ChaCha20-Poly1305, one keystream per packet (its own module)
    sendlane.apply()  # after send_packet: the lane stands in for the one installed


def revert() -> None:
    """Put asyncssh's originals back (idempotent): tests, and whoever embeds asyncssh."""
    for key, (owner, name, _) in PATCHES.items():
        setattr(owner, name, ORIGINALS[key])
    kexinit.uninstall()
    recvlane.uninstall()
    chacha.revert()
    sendlane.revert()
