"""One packet opened or sealed, per AEAD cipher: what the lanes differ in (run-time change 15).

The receive lane (:mod:`.recvlane`) and the send lane (:mod:`.sendlane`)
take channel data under the two AEAD ciphers asyncssh offers: AES-GCM (run-time
changes 11 and 12) and chacha20-poly1305@openssh.com (15), the cipher OpenSSH's
ssh, scp and sftp put first, so the one a stock client negotiates. Everything
else the lanes do (which packets they take, the checks, the delivery, the
sequence number and rekey books) is the same for both and stays in the lanes;
here is only what the two ciphers do differently with one packet:

- AES-GCM: the 4-byte length is in clear (authenticated as associated data),
  the nonce is the cipher's IV, which moves on by one per packet (the
  opener returns the next IV and the receive lane sets it when it takes the
  packet; the IV is the one piece of state opening a packet consumes);
- ChaCha20-Poly1305: the length is *encrypted* under a key of its own, with
  the packet's sequence number (8 bytes, big-endian) as nonce; the tag is
  Poly1305 over the encrypted length and body; there is no IV (the nonce is
  the sequence number, which the lanes advance as asyncssh does).

ChaCha20 is called only through the three methods of asyncssh's
``ChachaCipher`` (``decrypt_header``, ``verify_and_decrypt``,
``encrypt_and_sign``), as ``ChachaEncryption`` calls them, with the same
arguments, so whichever implementation of them is installed (asyncssh's own,
or run-time change 14's) is the one used. asyncssh's own accepts a
memoryview for the body, but only ``bytes`` for the length and the tag: those
are passed as ``bytes`` (4 and 16 bytes).

The openers return the packet's decrypted body (padding length, payload,
padding), where it ends in the buffer and the cipher's next IV (None for
ChaCha20), for the lane to set if it takes the packet; ``False`` when it is not all
received yet; ``None`` to leave it, untouched, to asyncssh's own path, which
then refuses it (or handles it) with asyncssh's own error: a bad tag, a
length over the limit, a length too short for any packet the lane takes.
Neither opener changes any state. The members relied on are in :data:`USES`,
pinned by tests/test_tuning.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from asyncssh import encryption as _encryption
from asyncssh.crypto import chacha as _chacha
from cryptography.exceptions import InvalidTag

GCMEncryption = _encryption.GCMEncryption
ChachaEncryption = _encryption.ChachaEncryption
_ChachaCipher = _chacha.ChachaCipher

#: Both ciphers' tag (GCM's and Poly1305's).
TAG = 16
#: The shortest body a lane takes: padding length, type, channel, one more
#: uint32 (a window adjust, or a data length), one byte of padding.
_SHORTEST = 11
_UINT64 = struct.Struct(">Q")
_IV_MASK = 0xFFFFFFFFFFFFFFFF

#: Relied on: how asyncssh's ChaCha20 packets are built and opened (the
#: arguments ChachaEncryption passes, which the lanes pass alike), the cipher
#: methods called, and the parameters that give the tag's size and the
#: padding rule (etm: the length is not counted in the padded size).
USES: dict[str, Any] = {
    "ChachaEncryption.__init__": ChachaEncryption.__init__,
    "ChachaEncryption.get_mac_params": ChachaEncryption.get_mac_params,
    "ChachaEncryption.encrypt_packet": ChachaEncryption.encrypt_packet,
    "ChachaEncryption.decrypt_header": ChachaEncryption.decrypt_header,
    "ChachaEncryption.decrypt_packet": ChachaEncryption.decrypt_packet,
    "ChachaCipher.__init__": _ChachaCipher.__init__,
    "ChachaCipher.encrypt_and_sign": _ChachaCipher.encrypt_and_sign,
    "ChachaCipher.decrypt_header": _ChachaCipher.decrypt_header,
    "ChachaCipher.verify_and_decrypt": _ChachaCipher.verify_and_decrypt,
}

Opened = tuple[bytes, int, bytes | None] | bool | None


def open_gcm(conn: Any, enc: Any, buf: Any) -> Opened:
    """The AES-GCM packet at the front of ``buf``, opened, and the IV after it
    (not set: the lane sets it if it takes the packet)."""
    if len(buf) < 4:
        return None
    pktlen = int.from_bytes(buf[:4], "big")
    if pktlen > conn._max_recv_pktlen:
        return None  # asyncssh refuses it
    end = 4 + pktlen + TAG
    if len(buf) < end:
        return False  # asyncssh would cut the header off and wait: the bytes wait here
    cipher = enc._cipher
    aesgcm = getattr(cipher, "_aesgcm", None)
    if aesgcm is None:
        return None
    iv = cipher._iv
    try:
        plain: bytes = aesgcm.decrypt(iv, buf[4:end], bytes(buf[:4]))
    except InvalidTag:
        return None  # asyncssh decrypts it again, fails and disconnects (MACError)
    # GCMCipher._update_iv's result: the invocation counter (last 8 bytes) plus one.
    return plain, end, iv[:4] + ((int.from_bytes(iv[4:], "big") + 1) & _IV_MASK).to_bytes(8, "big")


def open_chacha(conn: Any, enc: Any, buf: Any) -> Opened:
    """The ChaCha20-Poly1305 packet at the front of ``buf``, opened.

    Its length is decrypted once per packet: when the rest has not arrived
    yet, the length is kept on ``enc`` with the sequence number and the
    encrypted bytes it was decrypted from (a new key is a new ``enc``), and the
    next arrival finds it there instead of decrypting it again."""
    if len(buf) < 8:
        return None  # asyncssh's path waits for its first block (8 bytes)
    seq = conn._recv_seq
    header = bytes(buf[:4])
    known = getattr(enc, "_conduit_pktlen", None)
    if known is not None and known[0] == seq and known[1] == header:
        pktlen: int = known[2]
    else:
        nonce = _UINT64.pack(seq)
        pktlen = int.from_bytes(enc._cipher.decrypt_header(header, nonce), "big")
    if pktlen > conn._max_recv_pktlen:
        return None  # asyncssh refuses it
    end = 4 + pktlen + TAG
    if len(buf) < end:
        enc._conduit_pktlen = (seq, header, pktlen)
        return False
    if pktlen < _SHORTEST:
        return None  # nothing the lane takes (asyncssh slices one under 4 its own way)
    plain: bytes | None = enc._cipher.verify_and_decrypt(
        header, buf[4 : 4 + pktlen], _UINT64.pack(seq), bytes(buf[4 + pktlen : end])
    )
    if plain is None:
        return None  # asyncssh verifies it again, fails and disconnects (MACError)
    return plain, end, None


#: The receive lane's opener for each encryption it takes.
OPENERS: dict[type, Callable[[Any, Any, Any], Opened]] = {
    GCMEncryption: open_gcm,
    ChachaEncryption: open_chacha,
}


def seal_gcm(enc: Any, header: bytes, plain: bytes, seq: int) -> bytes:
    """Length, ciphertext and tag of one AES-GCM packet, as GCMCipher.encrypt_and_sign
    (tuning 2) produces them; the IV moves on."""
    cipher = enc._cipher
    iv = cipher._iv
    sealed: bytes = cipher._aesgcm.encrypt(iv, plain, header)
    cipher._iv = iv[:4] + ((int.from_bytes(iv[4:], "big") + 1) & _IV_MASK).to_bytes(8, "big")
    return header + sealed


def seal_chacha(enc: Any, header: bytes, plain: bytes, seq: int) -> bytes:
    """Encrypted length, ciphertext and tag of one ChaCha20-Poly1305 packet, as
    ChachaEncryption.encrypt_packet has them made (the sequence number as nonce)."""
    sealed, tag = enc._cipher.encrypt_and_sign(header, plain, _UINT64.pack(seq))
    packet: bytes = sealed + tag
    return packet


#: The send lane's sealer for each encryption it takes.
SEALERS: dict[type, Callable[[Any, bytes, bytes, int], bytes]] = {
    GCMEncryption: seal_gcm,
    ChachaEncryption: seal_chacha,
}
