"""TOTP secrets, encrypted at rest in the node's state database.

A TOTP secret is a password the gateway must be able to read back (it
computes the expected code from it), so it cannot be hashed. It is sealed
with AES-256-GCM under a key kept in its own file, ``data_dir/totp.key``
(32 random bytes, mode 0600, created on first enrolment): a copy of
``state.sqlite`` alone (a backup, a support bundle) gives away no secret.
The user's name is the AEAD's associated data, so a sealed secret moved to
another user's row does not open.

A key file that others may read is refused rather than used: the gateway
fails closed (no second factor can be checked, so nobody who needs one logs
in) and says why. Nothing here logs or prints a secret.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conduit.state import StateDB

KEY_FILE = "totp.key"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_AAD = b"conduit-totp-secret\0"

DDL = """
CREATE TABLE IF NOT EXISTS totp_secrets (
    user TEXT PRIMARY KEY,
    nonce BLOB NOT NULL,
    sealed BLOB NOT NULL,
    enrolled_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS totp_used (
    user TEXT PRIMARY KEY,
    step INTEGER NOT NULL
);
"""


class SecretStoreError(Exception):
    """The key file or a sealed secret cannot be used (one line, no secret in it)."""


class SecretStore:
    """Sealed TOTP secrets per user, and the last time-step each user spent."""

    def __init__(self, db: StateDB, key_path: Path) -> None:
        self.db = db
        self.key_path = key_path
        db.ensure(DDL)
        self._aead: AESGCM | None = None

    @classmethod
    def open(cls, data_dir: Path) -> SecretStore:
        return cls(StateDB.open(data_dir), data_dir / KEY_FILE)

    def close(self) -> None:
        self.db.close()

    # -- the key ------------------------------------------------------------------------

    def _key(self, create: bool) -> AESGCM:
        if self._aead is None:
            self._aead = AESGCM(self._read_key(create))
        return self._aead

    def _read_key(self, create: bool) -> bytes:
        if create:
            try:
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                try:
                    os.write(fd, os.urandom(_KEY_BYTES))
                    os.fsync(fd)
                finally:
                    os.close(fd)
        try:
            fd = os.open(self.key_path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise SecretStoreError(
                f"{self.key_path} is missing: the TOTP secrets cannot be read "
                "(restore it, or enrol everyone again)"
            ) from None
        except OSError as exc:
            raise SecretStoreError(f"cannot open {self.key_path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SecretStoreError(f"{self.key_path} is not a regular file")
            if info.st_mode & 0o077:
                raise SecretStoreError(
                    f"{self.key_path} may be read by others (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}): chmod 600 it"
                )
            key = os.read(fd, _KEY_BYTES + 1)
        finally:
            os.close(fd)
        if len(key) != _KEY_BYTES:
            raise SecretStoreError(f"{self.key_path} is not a {_KEY_BYTES}-byte key")
        return key

    # -- secrets ------------------------------------------------------------------------

    def ready(self) -> None:
        """Create the key file if there is none, and check it can be used."""
        self._key(create=True)

    def enrol(self, user: str, secret: str | None = None) -> str:
        """Store ``secret`` (default: a new random one, base32) for ``user``,
        replacing any earlier one; returns it.

        The user's replay mark goes too: the new secret's codes are new.
        """
        if secret is None:
            secret = new_secret()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._key(create=True).encrypt(nonce, secret.encode("ascii"), _aad(user))
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self.db.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO totp_secrets (user, nonce, sealed, enrolled_at)"
                " VALUES (?, ?, ?, ?)",
                (user, nonce, sealed, now),
            )
            db.execute("DELETE FROM totp_used WHERE user = ?", (user,))
        return secret

    def enrolled(self, user: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM totp_secrets WHERE user = ?", (user,)))

    def secret(self, user: str) -> str | None:
        """``user``'s secret, or None if none is enrolled."""
        rows = self.db.query("SELECT nonce, sealed FROM totp_secrets WHERE user = ?", (user,))
        if not rows:
            return None
        try:
            plain = self._key(create=False).decrypt(rows[0]["nonce"], rows[0]["sealed"], _aad(user))
        except InvalidTag:
            raise SecretStoreError(
                f"the TOTP secret of {user!r} does not open with {self.key_path} "
                "(wrong key file, or the row was altered): enrol the user again"
            ) from None
        return plain.decode("ascii")

    # -- replay marks -------------------------------------------------------------------

    def spend(self, user: str, steps: list[int]) -> int | None:
        """Record the highest of ``steps`` above ``user``'s last spent step.

        Returns the step recorded, or None when every one of ``steps`` was
        spent already (a replay). Atomic and durable: two connections racing
        with one code cannot both win, and the mark survives a restart.
        """
        with self.db.transaction() as db:
            row = db.execute("SELECT step FROM totp_used WHERE user = ?", (user,)).fetchone()
            last = row["step"] if row is not None else None
            fresh = [s for s in steps if last is None or s > last]
            if not fresh:
                return None
            step = max(fresh)
            db.execute(
                "INSERT INTO totp_used (user, step) VALUES (?, ?)"
                " ON CONFLICT(user) DO UPDATE SET step = excluded.step",
                (user, step),
            )
        return step


def new_secret() -> str:
    """32 base32 characters: 160 bits, RFC 4226's recommended length."""
    return pyotp.random_base32()


def _aad(user: str) -> bytes:
    return _AAD + user.encode("utf-8")
