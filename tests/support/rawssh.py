"""A client speaking the SSH binary packet protocol in clear, up to key exchange.

Enough of RFC 4253 to send a KEXINIT of one's choosing, optionally followed by
a guessed key-exchange packet (``first_kex_packet_follows``), and read what
the server answers: for tests of the server's key exchange that no real
client can be made to do.
"""

from __future__ import annotations

import os
import socket
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

MSG_DISCONNECT = 1
MSG_KEXINIT = 20
MSG_NEWKEYS = 21
MSG_KEX_ECDH_INIT = 30
MSG_KEX_ECDH_REPLY = 31


def string(value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(data)) + data


def frame(payload: bytes) -> bytes:
    """One unencrypted binary packet: length, padding length, payload, padding."""
    pad = 8 - (len(payload) + 5) % 8
    if pad < 4:
        pad += 8
    return struct.pack(">IB", len(payload) + pad + 1, pad) + payload + os.urandom(pad)


def kexinit(kex: str, host_keys: str, *, follows: bool) -> bytes:
    lists = [kex, host_keys, "aes128-ctr", "aes128-ctr"]
    lists += ["hmac-sha2-256", "hmac-sha2-256", "none", "none", "", ""]
    body = b"".join(string(n) for n in lists)
    return bytes([MSG_KEXINIT]) + os.urandom(16) + body + bytes([follows]) + b"\0\0\0\0"


def x25519_init() -> bytes:
    """A well-formed curve25519-sha256 KEX_ECDH_INIT."""
    public = X25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return bytes([MSG_KEX_ECDH_INIT]) + string(raw)


#: A KEX_ECDH_INIT no key exchange accepts (a 5-byte public key): a server
#: that processes it instead of ignoring it fails the key exchange.
BAD_INIT = bytes([MSG_KEX_ECDH_INIT]) + string(b"\x01" * 5)


class RawClient:
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(b"SSH-2.0-RawGuess_1.0\r\n")
        self._buf = b""
        while b"\r\n" not in self._buf:
            self._fill()
        _, self._buf = self._buf.split(b"\r\n", 1)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self._buf += chunk

    def send(self, *payloads: bytes) -> None:
        self.sock.sendall(b"".join(frame(p) for p in payloads))

    def receive(self) -> bytes:
        """The next packet's payload."""
        while len(self._buf) < 5:
            self._fill()
        length, pad = struct.unpack(">IB", self._buf[:5])
        while len(self._buf) < 4 + length:
            self._fill()
        payload = self._buf[5 : 4 + length - pad]
        self._buf = self._buf[4 + length :]
        return payload

    def close(self) -> None:
        self.sock.close()
