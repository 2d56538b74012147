"""AES-GCM in asyncssh: one key schedule per key, and received bytes not re-sliced.

Two of the run-time changes :mod:`.tuning` applies (numbered as there) concern
asyncssh's AES-GCM transport alone, and live here: 2 keeps one ``AESGCM`` per
key instead of building one per packet, and 4 holds the receive buffer as a
memoryview while AES-GCM is in use. The sending side's GCM packet building (3)
stays in :func:`conduit._asyncssh.tuning._send_packet`, the copy of
``SSHConnection.send_packet`` it belongs to, and in the send lane
(:mod:`.sendlane`, channel data); the receive lane (:mod:`.recvlane`) opens
channel data where it lies in the buffer. All three rely on the ``_aesgcm``
attribute set here.

Like every change in this package, each is tied to the pinned asyncssh
version: the originals replaced are in :data:`ORIGINALS`, the private members
the replacements rely on in :data:`USES`, and tests/test_tuning.py pins the
source of both. :func:`conduit._asyncssh.tuning.apply` installs :data:`PATCHES`
with the rest.
"""

from __future__ import annotations

import os
from typing import Any

from asyncssh import connection as _connection
from asyncssh import encryption as _encryption
from asyncssh.crypto import cipher as _cipher
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_SSHConnection = _connection.SSHConnection
GCMEncryption = _encryption.GCMEncryption
_GCMCipher = _cipher.GCMCipher


# Packet padding for what tuning 3 (every cipher) and the send lane build:
# from a pool of os.urandom bytes refilled 4 KiB at a time, rather than one
# getrandom() system call per packet (3.6 % of a download); as random as
# before, each byte used once.
_PAD_POOL_SIZE = 4096
_pad_pool = b""
_pad_used = 0


def padding(length: int) -> bytes:
    """``length`` fresh random bytes of packet padding."""
    global _pad_pool, _pad_used
    if _pad_used + length > len(_pad_pool):
        _pad_pool, _pad_used = os.urandom(_PAD_POOL_SIZE), 0
    _pad_used += length
    return _pad_pool[_pad_used - length : _pad_used]


_GCM_TAG = 16

ORIGINALS: dict[str, Any] = {
    "GCMCipher.__init__": _GCMCipher.__init__,
    "GCMCipher.encrypt_and_sign": _GCMCipher.encrypt_and_sign,
    "GCMCipher.verify_and_decrypt": _GCMCipher.verify_and_decrypt,
    "GCMEncryption.decrypt_packet": GCMEncryption.decrypt_packet,
    "SSHConnection.data_received": _SSHConnection.data_received,
    "SSHConnection._recv_pkthdr": _SSHConnection._recv_pkthdr,
}

#: Not replaced, but relied on: the IV update the replacements call, the
#: state GCMEncryption sets up, and (for 4) the receive path that slices the
#: input buffer.
USES: dict[str, Any] = {
    "GCMCipher._update_iv": _GCMCipher._update_iv,
    "GCMEncryption.__init__": GCMEncryption.__init__,
    "GCMEncryption.decrypt_header": GCMEncryption.decrypt_header,
    "SSHConnection._recv_data": _SSHConnection._recv_data,
    "SSHConnection._recv_packet": _SSHConnection._recv_packet,
}
_orig_gcm_init = _GCMCipher.__init__
_orig_recv_pkthdr = _SSHConnection._recv_pkthdr


# -- 2. one AESGCM object per key, not per packet ----------------------------------------
# GCMCipher built a new AESGCM (key schedule, OpenSSL context) for every packet.
# The key never changes for the life of a GCMCipher; a rekey makes a new one.


def _gcm_init(self: Any, cipher_name: str, key: bytes, iv: bytes) -> None:
    _orig_gcm_init(self, cipher_name, key, iv)
    self._aesgcm = AESGCM(key)


def _gcm_encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
    data = self._aesgcm.encrypt(self._iv, data, header)
    self._update_iv()
    return header + data[:-_GCM_TAG], data[-_GCM_TAG:]


def _gcm_verify_and_decrypt(self: Any, header: bytes, data: bytes, mac: bytes) -> bytes | None:
    try:
        decrypted: bytes | None = self._aesgcm.decrypt(self._iv, b"".join((data, mac)), header)
    except InvalidTag:
        decrypted = None
    self._update_iv()
    return decrypted


def _gcm_decrypt_packet(
    self: Any, seq: int, first: Any, rest: Any, header_len: int, mac: Any
) -> bytes | None:
    # One join instead of two concatenations; the pieces may be memoryviews (see 4).
    cipher = self._cipher
    try:
        decrypted: bytes | None = cipher._aesgcm.decrypt(
            cipher._iv, b"".join((first[header_len:], rest, mac)), bytes(first[:header_len])
        )
    except InvalidTag:
        decrypted = None
    cipher._update_iv()
    return decrypted


# -- 4. receiving: no re-slicing of the whole input buffer per packet -------------------
# asyncssh keeps received bytes in one immutable ``bytes`` and cuts the packet
# off its front twice per packet (header, then body): with the 256 KiB reads
# asyncio does, every packet copies everything behind it, ~12 % of an upload's
# CPU in memmove. Under AES-GCM (and ChaCha20-Poly1305, see :data:`VIEWS`) the
# buffer is held as a memoryview instead, so those cuts are free; the GCM decrypt
# above (2) accepts the pieces as they are. Any other cipher (and the clear-text
# version exchange and first key exchange) gets plain bytes, exactly as before.


#: The encryptions whose packets may be cut off the buffer as views: AES-GCM's
#: (2 above joins the pieces), and ChaCha20-Poly1305's while :mod:`.chacha` is
#: applied (it adds its own and takes it out again).
VIEWS: set[type] = {GCMEncryption}


def _data_received(self: Any, data: bytes, datatype: Any = None) -> None:
    buf = self._inpbuf
    if type(self._recv_encryption) in VIEWS:
        self._inpbuf = memoryview(b"".join((buf, data)) if buf else data)
    else:
        self._inpbuf = (bytes(buf) if type(buf) is memoryview else buf) + data
    self._recv_data()


def _recv_pkthdr(self: Any) -> bool:
    if type(self._inpbuf) is memoryview and type(self._recv_encryption) not in VIEWS:
        # A rekey switched to a cipher that needs bytes with bytes pending: back to bytes.
        self._inpbuf = bytes(self._inpbuf)
    return bool(_orig_recv_pkthdr(self))


PATCHES: dict[str, tuple[Any, str, Any]] = {
    "GCMCipher.__init__": (_GCMCipher, "__init__", _gcm_init),
    "GCMCipher.encrypt_and_sign": (_GCMCipher, "encrypt_and_sign", _gcm_encrypt_and_sign),
    "GCMCipher.verify_and_decrypt": (_GCMCipher, "verify_and_decrypt", _gcm_verify_and_decrypt),
    "GCMEncryption.decrypt_packet": (GCMEncryption, "decrypt_packet", _gcm_decrypt_packet),
    "SSHConnection.data_received": (_SSHConnection, "data_received", _data_received),
    "SSHConnection._recv_pkthdr": (_SSHConnection, "_recv_pkthdr", _recv_pkthdr),
}
