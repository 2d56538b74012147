"""Run-time changes to asyncssh, kept in one place (see ASYNCSSH-NOTES.md).

Each change is tied to the pinned asyncssh version: :func:`apply` refuses to
run on another one, and ``tests/test_tuning.py`` fails when an upgrade makes a
change stale (the patched function's source no longer looks as expected).
None of them changes what goes over the wire in a way a peer can tell apart
from a correct SSH implementation.

1. **No empty MSG_IGNORE before every packet under AEAD ciphers.** asyncssh
   sends one before each connection-layer packet, a countermeasure against
   the CBC-mode chosen-plaintext attack on predictable IVs (Rogaway; the
   OpenSSH CBC advisory of 2008). AES-GCM and chacha20-poly1305 use a fresh
   nonce per packet and have no such weakness, and OpenSSH itself sends no
   ignore packets. Under CBC/CTR (non-AEAD) the packets are still sent.
   Measured: fewer packets, encryptions and syscalls; the largest single gain
   on downloads.
2. **Packet logging only when it is on.** asyncssh formats a description of
   every packet (name lookup, byte counts, an f-string) before asking the
   logger whether debug level 3 is enabled; now the question comes first.
3. **One AESGCM object per key, not per packet.** ``cryptography``'s AESGCM
   object is reusable; asyncssh built a new one (key schedule included) for
   every packet.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import asyncssh
from asyncssh import connection as _connection
from asyncssh import encryption as _encryption
from asyncssh import packet as _packet
from asyncssh.constants import MSG_IGNORE
from asyncssh.crypto import cipher as _cipher
from asyncssh.logging import SSHLogger
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PINNED = "2.24.1"

# The source of each function we wrap or replace, as shipped in PINNED.
EXPECTED_SOURCES = {
    "SSHConnection.send_packet": "fb9da7bec6dd",
    "SSHPacketLogger._log_packet": "f3263d7da936",
    "GCMCipher.encrypt_and_sign": "adb87dbdb4f9",
    "GCMCipher.verify_and_decrypt": "c09eb5b36d0f",
}

_AEAD = (_encryption.GCMEncryption, _encryption.ChachaEncryption)
_EMPTY_STRING = b"\0\0\0\0"
_applied = False


def source_digest(function: Any) -> str:
    """A short digest of a function's source, to notice an upgrade that changed it."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:12]


def targets() -> dict[str, Any]:
    return {
        "SSHConnection.send_packet": _original_send_packet,
        "SSHPacketLogger._log_packet": _original_log_packet,
        "GCMCipher.encrypt_and_sign": _original_encrypt,
        "GCMCipher.verify_and_decrypt": _original_decrypt,
    }


_original_send_packet = _connection.SSHConnection.send_packet
_original_log_packet = _packet.SSHPacketLogger._log_packet
_original_encrypt = _cipher.GCMCipher.encrypt_and_sign
_original_decrypt = _cipher.GCMCipher.verify_and_decrypt


def _send_packet(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
    if (
        pkttype == MSG_IGNORE
        and args == (_EMPTY_STRING,)
        and isinstance(self._send_encryption, _AEAD)
    ):
        return
    _original_send_packet(self, pkttype, *args, handler=handler)


def _log_packet(self: Any, msg: str, pkttype: int, pktid: Any, packet: Any, note: str) -> None:
    if SSHLogger._debug_level >= 3:
        _original_log_packet(self, msg, pkttype, pktid, packet, note)


def _aead(cipher: Any) -> AESGCM:
    aead: AESGCM | None = cipher.__dict__.get("_conduit_aead")
    if aead is None:
        aead = cipher._conduit_aead = AESGCM(cipher._key)
    return aead


def _encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
    sealed = _aead(self).encrypt(self._iv, data, header)
    self._update_iv()
    return header + sealed[:-16], sealed[-16:]


def _verify_and_decrypt(self: Any, header: bytes, data: bytes, mac: bytes) -> bytes | None:
    try:
        opened: bytes | None = _aead(self).decrypt(self._iv, data + mac, header)
    except InvalidTag:
        opened = None
    self._update_iv()
    return opened


def apply() -> None:
    """Apply the run-time changes (idempotent); refuse on an unexpected asyncssh."""
    global _applied
    if asyncssh.__version__ != PINNED:
        raise RuntimeError(
            f"conduit.gateway.tuning is written for asyncssh {PINNED}, found {asyncssh.__version__}"
        )
    if _applied:
        return
    _connection.SSHConnection.send_packet = _send_packet  # type: ignore[method-assign]
    _packet.SSHPacketLogger._log_packet = _log_packet  # type: ignore[method-assign]
    _cipher.GCMCipher.encrypt_and_sign = _encrypt_and_sign  # type: ignore[method-assign]
    _cipher.GCMCipher.verify_and_decrypt = _verify_and_decrypt  # type: ignore[method-assign]
    _applied = True
