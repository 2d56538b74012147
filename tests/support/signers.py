"""Signers for the inspection tests: real ssh-keygen and gpg, keys made on the spot.

gpg runs in homes of its own under the test's temp folder (never the user's
keyring); ed25519 keys without a passphrase generate in a fraction of a
second. An expired key is made with ``--faked-system-time`` (born and used
in 2020, dead in 2021); a revoked key by importing the revocation
certificate gpg writes at generation.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def ssh_key(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
    )
    return key


def ssh_sign(key: Path, file: Path, namespace: str, out: Path | None = None) -> Path:
    """``ssh-keygen -Y sign``: the signature of ``file``, at ``out`` (default FILE.sig)."""
    result = subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", namespace],
        input=file.read_bytes(),
        capture_output=True,
        check=True,
    )
    target = out or file.with_name(file.name + ".sig")
    target.write_bytes(result.stdout)
    return target


@dataclass
class PgpKey:
    home: Path
    fingerprint: str
    public: Path  # armoured export

    def gpg(self, *args: str, faked: str | None = None) -> subprocess.CompletedProcess[bytes]:
        time = [f"--faked-system-time={faked}!"] if faked else []
        return subprocess.run(
            ["gpg", "--batch", "--quiet", "--homedir", str(self.home), *time, *args],
            capture_output=True,
            check=True,
        )

    def sign(
        self, file: Path, *, armor: bool = False, out: Path | None = None, faked: str | None = None
    ) -> Path:
        target = out or file.with_name(file.name + (".asc" if armor else ".sig"))
        self.gpg(
            *(["--armor"] if armor else []),
            "--yes",
            "--output",
            str(target),
            "--detach-sign",
            str(file),
            faked=faked,
        )
        return target

    def stop(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], check=False)


def pgp_key(folder: Path, name: str, *, expire: str = "never", faked: str | None = None) -> PgpKey:
    home = folder / name
    home.mkdir(mode=0o700)
    key = PgpKey(home, "", folder / f"{name}.asc")
    key.gpg(
        "--passphrase",
        "",
        "--quick-gen-key",
        f"{name} <{name}@example.com>",
        "ed25519",
        "sign",
        expire,
        faked=faked,
    )
    listing = key.gpg("--with-colons", "--list-keys").stdout.decode()
    key.fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    export(key)
    return key


def export(key: PgpKey) -> None:
    key.public.write_bytes(key.gpg("--armor", "--export", key.fingerprint).stdout)


def revoke(key: PgpKey) -> None:
    """Import the revocation certificate gpg wrote at generation; re-export."""
    cert = key.home / "openpgp-revocs.d" / f"{key.fingerprint}.rev"
    text = cert.read_text().replace(":-----BEGIN", "-----BEGIN", 1)
    armoured = key.home / "revoke.asc"
    armoured.write_text(text)
    key.gpg("--import", str(armoured))
    export(key)
