"""Hand OpenSSH user certificates to the application whole.

asyncssh judges a client certificate itself (``validate_ca_key``, then its
own validity, principal and ``source-address`` checks) and refuses silently:
the application never learns why, nor the certificate's key id or serial,
and a certificate with an unknown critical option is dropped while it is
decoded. Conduit needs each reason in its journal and maps principals to
users its own way, so each connection's ``validate_public_key`` is wrapped
(on that connection object only): a certificate goes to ``judge`` with its
raw blob; if ``judge`` accepts it, the signature proving the client holds the
certified key is checked by asyncssh's own path, given the certified plain
key, while ``judge`` has marked that one key as accepted for that one call.
Anything else (plain keys) goes to asyncssh unchanged. Written for asyncssh
2.24.1; the members relied on are in :data:`USES`, pinned by tests/test_tuning.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
from asyncssh.connection import SSHServerConnection

USES: dict[str, Any] = {
    "SSHServerConnection.validate_public_key": SSHServerConnection.validate_public_key,
    "SSHServerConnection._validate_client_public_key": (
        SSHServerConnection._validate_client_public_key
    ),
}

_CERT = b"-cert-v01@openssh.com"
_X509 = b"x509v3-"

#: (username, certificate blob) -> the certified plain key blob to verify the
#: signature with, or None to refuse (the callee journals why).
Judge = Callable[[str, bytes], bytes | None]


def _algorithm(blob: bytes) -> bytes:
    if len(blob) < 4:
        return b""
    n = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + n]


def watch(conn: asyncssh.SSHServerConnection, judge: Judge) -> None:
    """Route ``conn``'s certificates through ``judge``."""
    original: Callable[[str, bytes, bytes, bytes], Awaitable[bool]] = conn.validate_public_key

    async def validate_public_key(
        username: str, key_data: bytes, msg: bytes, signature: bytes
    ) -> bool:
        alg = _algorithm(key_data)
        if not (alg.endswith(_CERT) or alg.startswith(_X509)):
            return await original(username, key_data, msg, signature)
        plain = judge(username, key_data)
        if plain is None:
            return False
        # asyncssh's plain-key path: decode, ask validate_public_key (which
        # the judge primed for exactly this key), verify the signature.
        return await original(username, plain, msg, signature)

    conn.validate_public_key = validate_public_key  # type: ignore[method-assign]
