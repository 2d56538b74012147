"""OpenPGP detached signatures, verified by ``gpg`` in a keyring the gateway owns.

Each trust set gets its own GnuPG home under ``data_dir/inspect/gnupg``
(mode 0700), holding exactly the keys its ``openpgp_keys`` name: being in
that keyring *is* being trusted (``--trust-model always``), and a key of one
trust set never vouches for a conduit that names another. The user's own
keyring is never read (``--homedir``, ``--no-default-keyring``), no agent is
started (``--no-autostart``), and nothing is asked (``--batch``).

A home is named after the SHA-256 of its key files' bytes, built in a temp
folder and renamed into place when complete, so a reload with new keys gets a
fresh keyring and gateways sharing a data_dir never see a half-built one.

The verdict comes from ``--status-fd`` lines, not from texts meant for
people: ``GOODSIG`` with ``VALIDSIG`` is good; ``EXPKEYSIG``, ``REVKEYSIG``,
``EXPSIG``, ``BADSIG``, ``NO_PUBKEY``/``ERRSIG`` each have their own reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from conduit.inspect._proc import ToolFailed, run
from conduit.inspect.outcome import (
    EXPIRED,
    GOOD,
    MALFORMED,
    MISMATCH,
    REVOKED,
    SIG_EXPIRED,
    UNAVAILABLE,
    UNTRUSTED,
    Outcome,
    bad,
)

KEYBOX = "anchors.kbx"
COMPLETE = ".complete"


def _base(home: Path) -> list[str]:
    return [
        "gpg",
        "--batch",
        "--no-tty",
        "--no-autostart",
        "--homedir",
        str(home),
        "--no-default-keyring",
        "--keyring",
        str(home / KEYBOX),
        "--trust-model",
        "always",
        "--no-auto-key-locate",
        "--no-auto-key-retrieve",
    ]


def _status(stdout: str) -> list[list[str]]:
    return [line.split()[1:] for line in stdout.splitlines() if line.startswith("[GNUPG:] ")]


def judge(stdout: str, trust: str = "") -> Outcome:
    """The verdict of ``gpg --status-fd 1 --verify`` from its status lines."""
    status = _status(stdout)
    words = {row[0]: row[1:] for row in status if row}
    if sum(1 for row in status if row and row[0] == "NEWSIG") > 1:
        return bad(MALFORMED, "more than one signature in the signature file")
    where = f" (trust {trust!r})"
    if "REVKEYSIG" in words:
        return bad(REVOKED, f"gpg: key {words['REVKEYSIG'][0]} is revoked{where}")
    if "EXPKEYSIG" in words:
        return bad(EXPIRED, f"gpg: key {words['EXPKEYSIG'][0]} has expired{where}")
    if "EXPSIG" in words:
        return bad(SIG_EXPIRED, f"gpg: the signature by {words['EXPSIG'][0]} has expired{where}")
    if "BADSIG" in words:
        return bad(MISMATCH, f"gpg: BAD signature by key {words['BADSIG'][0]}{where}")
    if "GOODSIG" in words and "VALIDSIG" in words:
        fingerprint = words["VALIDSIG"][0]
        return Outcome(True, GOOD, f"OpenPGP signature by {fingerprint}{where}", fingerprint)
    errsig = words.get("ERRSIG", [])  # KEYID PKALGO HASHALGO CLASS TIME RC [FPR]
    if "NO_PUBKEY" in words or errsig[5:6] == ["9"]:
        key = (words.get("NO_PUBKEY") or words.get("ERRSIG") or ["?"])[0]
        return bad(UNTRUSTED, f"gpg: key {key} is not in trust {trust!r}")
    if "ERRSIG" in words:
        return bad(
            MALFORMED, f"gpg: cannot check the signature (ERRSIG {' '.join(words['ERRSIG'])})"
        )
    return bad(MALFORMED, "gpg: not an OpenPGP detached signature")


class Keyring:
    """One trust set's OpenPGP keys, in a GnuPG home of the gateway's own."""

    def __init__(self, root: Path, trust: str, keys: Sequence[Path], timeout: float) -> None:
        self._root = root
        self._trust = trust
        self._keys = tuple(keys)
        self._timeout = timeout
        self._home: Path | None = None
        self._lock = asyncio.Lock()

    async def home(self) -> Path:
        """The keyring's home, built (once) from the key files."""
        async with self._lock:
            if self._home is None:
                self._home = await self._build()
            return self._home

    async def _build(self) -> Path:
        digest = hashlib.sha256()
        for key in self._keys:
            digest.update(hashlib.sha256(key.read_bytes()).digest())
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self._root, 0o700)
        final = self._root / f"{self._trust}-{digest.hexdigest()[:24]}"
        if (final / COMPLETE).exists():
            return final
        building = Path(tempfile.mkdtemp(prefix=".build-", dir=self._root))
        try:
            await import_keys(building, self._keys, self._timeout)
            (building / COMPLETE).touch()
            try:
                building.rename(final)
            except OSError:
                if not (final / COMPLETE).exists():  # not a rival's finished copy
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)
        return final

    async def verify(self, file: Path, signature: Path) -> Outcome:
        """Does the detached signature ``signature`` vouch for ``file``?"""
        try:
            home = await self.home()
            result = await run(
                [*_base(home), "--status-fd", "1", "--verify", str(signature), str(file)],
                timeout=self._timeout,
            )
        except ToolFailed as exc:
            return bad(UNAVAILABLE, str(exc))
        except (OSError, KeyImportFailed) as exc:
            return bad(UNAVAILABLE, f"keyring of trust {self._trust!r}: {exc}")
        outcome = judge(result.stdout, self._trust)
        if outcome.ok and result.returncode != 0:
            return bad(MALFORMED, f"gpg exited {result.returncode} despite a good signature")
        return outcome


class KeyImportFailed(Exception):
    pass


async def import_keys(home: Path, keys: Sequence[Path], timeout: float) -> list[str]:
    """Import ``keys`` into a new keyring at ``home``; their fingerprints, or KeyImportFailed."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)
    fingerprints: list[str] = []
    for key in keys:
        try:
            result = await run(
                [
                    *_base(home),
                    "--status-fd",
                    "1",
                    "--import-options",
                    "import-minimal",
                    "--import",
                    str(key),
                ],
                timeout=timeout,
            )
        except ToolFailed as exc:
            raise KeyImportFailed(str(exc)) from None
        found = [
            row[2] for row in _status(result.stdout) if row[:1] == ["IMPORT_OK"] and len(row) > 2
        ]
        if not found:
            raise KeyImportFailed(f"{key}: no OpenPGP public key could be imported")
        fingerprints += found
    return fingerprints
