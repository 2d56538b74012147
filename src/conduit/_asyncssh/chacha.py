"""ChaCha20-Poly1305 in asyncssh: one keystream per packet (run-time change 14).

OpenSSH's clients put ``chacha20-poly1305@openssh.com`` first, so it is the
cipher a stock ssh/scp/sftp gets from Conduit. asyncssh 2.24.1's
``ChachaCipher`` spends most of a packet in Python around the crypto: it builds
three ChaCha20 contexts per packet (``Cipher(...).encryptor()``, ~2.3 us each
on the 2-core box: one for the length, one for the Poly1305 key, one for the
body, although key and body come from the same keystream), joins
``header + data`` (a copy of the whole packet) only to hand it to a one-shot
Poly1305, and reaches each step through a module function of its own. A
32 KiB packet cost 22.7 us to seal and 19.8 us to open, a 100-byte one
11.5 us; the crypto itself is ~10 us of the 32 KiB.

The methods here are byte-identical replacements with the same names and
signatures, which asyncssh's ``ChachaEncryption`` calls (and the lanes,
:mod:`.recvlane` and :mod:`.sendlane`, where they take ChaCha20 packets):

- the body's context also gives the Poly1305 key: OpenSSH's construction
  (PROTOCOL.chacha20poly1305) takes the key from the first 32 bytes of block 0
  of the body key's keystream (nonce = sequence number) and encrypts the body
  from block 1 on, so one context, fed 64 zero bytes and then the body, yields
  both; the length keeps its own context (another key);
- Poly1305 is fed the encrypted length and the body one after the other
  instead of their concatenation (even sealing, where the caller gets them
  joined: one pass over the joined packet measured 0.5 us slower per 32 KiB
  packet), and checks a received tag with cryptography's ``verify`` (constant
  time, as ``verify_tag`` was); the body is decrypted only after the tag is
  verified, as before;
- every argument may be a memoryview (a lane's slice of the receive buffer)
  as well as bytes; the results are ``bytes``, as before.

With them, the receive buffer is held as a memoryview under ChaCha20-Poly1305
as under AES-GCM (tuning 4, in :mod:`.gcm`): ``ChachaEncryption.decrypt_packet``
joins the pieces once where asyncssh concatenated them (:func:`_decrypt_packet`).

A wrong or truncated tag is refused as before (``None``, which asyncssh
turns into ``MACError``). Only cryptography's public API is used. The
replaced methods are in :data:`ORIGINALS`, what they rely on in :data:`USES`
(both pinned by tests/test_tuning.py); :func:`apply` and :func:`revert` are
called by :func:`conduit._asyncssh.tuning.apply` and
:func:`~conduit._asyncssh.tuning.revert`.
"""

from __future__ import annotations

from typing import Any

from asyncssh import encryption as _encryption
from asyncssh.crypto import chacha as _chacha
from asyncssh.packet import UInt64
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.poly1305 import Poly1305

from conduit._asyncssh import gcm

ChachaCipher = _chacha.ChachaCipher
ChachaEncryption = _encryption.ChachaEncryption

ORIGINALS: dict[str, Any] = {
    "ChachaCipher.encrypt_and_sign": ChachaCipher.encrypt_and_sign,
    "ChachaCipher.decrypt_header": ChachaCipher.decrypt_header,
    "ChachaCipher.verify_and_decrypt": ChachaCipher.verify_and_decrypt,
    "ChachaEncryption.decrypt_packet": ChachaEncryption.decrypt_packet,
}

#: Relied on: the keys ``__init__`` sets (``_key`` for the body and Poly1305,
#: ``_adkey`` for the length), the construction the module functions implement
#: (the replacements must agree with them byte for byte), and the callers that
#: hand the methods their arguments (the nonce: the sequence number, 8 bytes).
USES: dict[str, Any] = {
    "ChachaCipher.__init__": ChachaCipher.__init__,
    "chacha.chacha20": _chacha.chacha20,
    "chacha.poly1305_key": _chacha.poly1305_key,
    "chacha.poly1305": _chacha.poly1305,
    "chacha.poly1305_verify": _chacha.poly1305_verify,
    "ChachaEncryption.__init__": ChachaEncryption.__init__,
    "ChachaEncryption.encrypt_packet": ChachaEncryption.encrypt_packet,
    "ChachaEncryption.decrypt_header": ChachaEncryption.decrypt_header,
}

# cryptography's 16-byte ChaCha20 "nonce" is the state's last four words, the
# block counter first (little-endian): 8 zero bytes and OpenSSH's 8-byte nonce
# are OpenSSH's 64-bit counter at block 0 and its nonce (asyncssh's _CTR_0). Block
# 0 is the Poly1305 key's, the body starts at block 1: reached by running through
# block 0, not by a second context.
_CTR_0 = bytes(8)
_BLOCK_0 = bytes(64)
_POLY1305_KEYBYTES = 32


def _keystream(key: bytes, nonce: Any) -> Any:
    """The ChaCha20 context for ``key`` at block 0 of ``nonce``."""
    return Cipher(ChaCha20(key, _CTR_0 + nonce), mode=None).encryptor()


def _encrypt_and_sign(self: Any, header: Any, data: Any, nonce: Any) -> tuple[bytes, bytes]:
    """Encrypt and sign a block of data (ChachaCipher.encrypt_and_sign)."""
    header = _keystream(self._adkey, nonce).update(header)
    body = _keystream(self._key, nonce)
    mac = Poly1305(body.update(_BLOCK_0)[:_POLY1305_KEYBYTES])
    data = body.update(data)
    mac.update(header)
    mac.update(data)
    return header + data, mac.finalize()


def _decrypt_header(self: Any, header: Any, nonce: Any) -> bytes:
    """Decrypt header data (ChachaCipher.decrypt_header)."""
    decrypted: bytes = _keystream(self._adkey, nonce).update(header)
    return decrypted


def _verify_and_decrypt(self: Any, header: Any, data: Any, nonce: Any, tag: Any) -> bytes | None:
    """Verify the signature of and decrypt a block of data
    (ChachaCipher.verify_and_decrypt): ``None`` when the tag is wrong."""
    body = _keystream(self._key, nonce)
    mac = Poly1305(body.update(_BLOCK_0)[:_POLY1305_KEYBYTES])
    mac.update(header)
    mac.update(data)
    try:
        # cryptography wants the tag as bytes; cut off the receive buffer it is a view.
        mac.verify(tag if type(tag) is bytes else bytes(tag))
    except InvalidSignature:
        return None
    decrypted: bytes = body.update(data)
    return decrypted


# -- the receive buffer as a memoryview under ChaCha20-Poly1305 too (tuning 4) -----------
# asyncssh cuts each received packet off the front of one immutable buffer,
# copying everything behind it (256 KiB reads: 14 us per 32 KiB packet under
# cProfile, a tenth of an upload's loop). :mod:`.gcm` holds the buffer as a
# memoryview for the encryptions in ``gcm.VIEWS``; :func:`apply` adds
# ChachaEncryption, whose decrypt_packet (asyncssh: ``first[header_len:] +
# rest``, which two memoryviews cannot do) is replaced by this one join. The
# header's slice goes to decrypt_header as it is; the methods above take views.


def _decrypt_packet(
    self: Any, seq: int, first: Any, rest: Any, header_len: int, mac: Any
) -> bytes | None:
    """Verify the signature of and decrypt an SSH packet
    (ChachaEncryption.decrypt_packet); the pieces may be memoryviews."""
    decrypted: bytes | None = self._cipher.verify_and_decrypt(
        first[:header_len], b"".join((first[header_len:], rest)), UInt64(seq), mac
    )
    return decrypted


PATCHES: dict[str, tuple[Any, str, Any]] = {
    "ChachaCipher.encrypt_and_sign": (ChachaCipher, "encrypt_and_sign", _encrypt_and_sign),
    "ChachaCipher.decrypt_header": (ChachaCipher, "decrypt_header", _decrypt_header),
    "ChachaCipher.verify_and_decrypt": (ChachaCipher, "verify_and_decrypt", _verify_and_decrypt),
    "ChachaEncryption.decrypt_packet": (ChachaEncryption, "decrypt_packet", _decrypt_packet),
}


def apply() -> None:
    """Install the one-keystream methods and the receive buffer's views (idempotent)."""
    for owner, name, replacement in PATCHES.values():
        setattr(owner, name, replacement)
    gcm.VIEWS.add(ChachaEncryption)


def revert() -> None:
    """asyncssh's own methods and bytes back (idempotent)."""
    gcm.VIEWS.discard(ChachaEncryption)
    for key, (owner, name, _) in PATCHES.items():
        setattr(owner, name, ORIGINALS[key])
