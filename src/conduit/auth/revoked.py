"""``[auth] revoked_keys``: an OpenSSH KRL, or a plain list of public keys.

Which one is told by the file's first bytes (a KRL starts with its magic).
A plain list holds one public key per line (``#`` comments and blank lines
skipped); a certificate is revoked when its key or its CA's key is listed,
as OpenSSH's ``RevokedKeys`` does. A file that cannot be read is an error:
a gateway does not start with a revocation list it cannot read, and a reload
that meets one keeps the list in force (see ``conduit.gateway.reloading``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from conduit.auth import krl as _krl


class RevocationError(ValueError):
    """The revocation list cannot be used (one line: file, line, why)."""


@dataclass(frozen=True, slots=True)
class Revocation:
    """Revoked keys and certificates; empty revokes nothing."""

    krl: _krl.KRL | None = None
    keys: frozenset[bytes] = field(default_factory=frozenset)

    def key_revoked(self, blob: bytes) -> str | None:
        """Why the plain key ``blob`` is revoked, or None."""
        if blob in self.keys:
            return "key revoked (listed in revoked_keys)"
        return self.krl.key_revoked(blob) if self.krl else None

    def cert_revoked(self, key: bytes, ca: bytes, serial: int, key_id: str) -> str | None:
        """Why a certificate is revoked: its key, its CA's key, its serial or its id."""
        why = self.key_revoked(key)
        if why:
            return f"certificate's {why}"
        why = self.key_revoked(ca)
        if why:
            return f"certificate's CA {why}"
        return self.krl.cert_revoked(ca, serial, key_id) if self.krl else None


def load(path: Path | None) -> Revocation:
    """Read ``path`` (None: nothing revoked); :class:`RevocationError` if unusable."""
    if path is None:
        return Revocation()
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise RevocationError(f"{path}: no such file") from exc
    except OSError as exc:
        raise RevocationError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if _krl.is_krl(data):
        try:
            return Revocation(krl=_krl.parse(data))
        except _krl.KRLError as exc:
            raise RevocationError(f"{path}: {exc}") from exc
    keys = set()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RevocationError(f"{path}: neither an OpenSSH KRL nor a text list of keys") from exc
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.add(bytes(asyncssh.import_public_key(line).public_data))
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise RevocationError(f"{path} line {number}: not an OpenSSH public key") from exc
    return Revocation(keys=frozenset(keys))
