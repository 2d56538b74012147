"""Which SSH algorithms the gateway offers: modern ones only, unless a site says otherwise.

asyncssh's own defaults still include SHA-1 key exchange and MACs (and
accept MD5 MACs when asked); an OT gateway should not. By default the
gateway offers only the lists below: hybrid post-quantum and elliptic-curve
key exchange, large-group Diffie-Hellman with SHA-2, AES-GCM,
ChaCha20-Poly1305 and AES-CTR, SHA-2 MACs, and Ed25519/ECDSA/RSA-SHA-2 host
keys. No MD5, no SHA-1, no CBC.

``[gateway.crypto]`` changes the lists for the whole site, and
``[devices.NAME.crypto]`` for the gateway's connection to one device (old
embedded devices often speak only legacy algorithms). Each key takes, as
OpenSSH's ``KexAlgorithms`` and kin do, a list or comma-separated string that
replaces the default, ``"+a,b"`` to append to it, ``"-a,b"`` to remove from it
or ``"^a,b"`` to put first. ``conduit check`` prints the effective lists and
warns about weak choices. (asyncssh 2.24.1 has no sntrup761x25519-sha512.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs
from asyncssh.public_key import get_certificate_algs, get_public_key_algs
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

DEFAULT_KEX = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)
# AES-GCM first: asyncssh runs it ~2x faster than chacha20-poly1305.
DEFAULT_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
DEFAULT_MACS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
)
DEFAULT_HOST_KEYS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)


def _names(algs: list[bytes]) -> frozenset[str]:
    return frozenset(a.decode("ascii") for a in algs)


KNOWN = {
    "kex": _names(get_kex_algs()),
    "ciphers": _names(get_encryption_algs()),
    "macs": _names(get_mac_algs()),
    "host_keys": _names(get_public_key_algs() + get_certificate_algs()),
}
DEFAULTS = {
    "kex": DEFAULT_KEX,
    "ciphers": DEFAULT_CIPHERS,
    "macs": DEFAULT_MACS,
    "host_keys": DEFAULT_HOST_KEYS,
}


def _split(value: str | list[str]) -> tuple[str, list[str]]:
    """``(op, names)``: op is ``=`` (replace), ``+``, ``-`` or ``^``."""
    if isinstance(value, list):
        return "=", value
    op = value[:1] if value[:1] in ("+", "-", "^") else "="
    body = value[1:] if op != "=" else value
    return op, [n.strip() for n in body.split(",") if n.strip()]


class CryptoConfig(BaseModel):
    """``[gateway.crypto]`` / ``[devices.NAME.crypto]``: None keeps the default list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kex: str | list[str] | None = None
    ciphers: str | list[str] | None = None
    macs: str | list[str] | None = None
    host_keys: str | list[str] | None = None

    @field_validator("kex", "ciphers", "macs", "host_keys")
    @classmethod
    def _known(cls, value: str | list[str] | None, info: ValidationInfo) -> str | list[str] | None:
        if value is None:
            return value
        _, names = _split(value)
        unknown = [n for n in names if n not in KNOWN[str(info.field_name)]]
        if unknown:
            raise ValueError(f"unknown algorithm {unknown[0]!r} (asyncssh does not offer it)")
        return value


@dataclass(frozen=True, slots=True)
class Algorithms:
    """The lists offered, in order of preference."""

    kex: tuple[str, ...]
    ciphers: tuple[str, ...]
    macs: tuple[str, ...]
    host_keys: tuple[str, ...]

    def items(self) -> list[tuple[str, tuple[str, ...]]]:
        return [
            ("kex", self.kex),
            ("ciphers", self.ciphers),
            ("macs", self.macs),
            ("host_keys", self.host_keys),
        ]


def _apply(default: tuple[str, ...], value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return default
    op, names = _split(value)
    if op == "=":
        return tuple(dict.fromkeys(names))
    if op == "+":
        return tuple(dict.fromkeys((*default, *names)))
    if op == "^":
        return tuple(dict.fromkeys((*names, *default)))
    return tuple(n for n in default if n not in names)


def effective(crypto: CryptoConfig | None) -> Algorithms:
    """The algorithms offered under ``crypto`` (the defaults where it says nothing)."""
    c = crypto or CryptoConfig()
    return Algorithms(
        kex=_apply(DEFAULT_KEX, c.kex),
        ciphers=_apply(DEFAULT_CIPHERS, c.ciphers),
        macs=_apply(DEFAULT_MACS, c.macs),
        host_keys=_apply(DEFAULT_HOST_KEYS, c.host_keys),
    )


def weakness(name: str) -> str | None:
    """Why ``name`` is a weak choice, or None."""
    n = name.lower()
    if "md5" in n:
        return "MD5 is broken"
    if "cbc" in n or n.startswith(("arcfour", "3des", "blowfish", "cast128")):
        return "legacy cipher (CBC or RC4 family)"
    if "sha1" in n or n in ("ssh-rsa", "ssh-dss") or n.startswith("ssh-rsa-cert"):
        return "SHA-1"
    if "group1-" in n or "rsa1024" in n or n.endswith("-96") or "-96-" in n:
        return "too small a group, key or MAC"
    return None


def weak_choices(algs: Algorithms) -> list[tuple[str, str, str]]:
    """``(list, algorithm, why)`` for each weak algorithm offered."""
    return [(kind, n, why) for kind, names in algs.items() for n in names if (why := weakness(n))]


def negotiated(conn: Any) -> dict[str, str | None]:
    """What an established asyncssh connection agreed on, for audit records
    (``kex`` and ``host_key_algorithm`` come from conduit._asyncssh.kexinit)."""
    info = conn.get_extra_info
    cipher, recv_cipher = info("send_cipher"), info("recv_cipher")
    mac, recv_mac = info("send_mac"), info("recv_mac")
    return {
        "kex": info("kex_algorithm"),
        "host_key_algorithm": info("host_key_algorithm"),
        "cipher": cipher if cipher == recv_cipher else f"{recv_cipher}/{cipher}",
        # AEAD ciphers authenticate themselves: asyncssh then names the cipher as MAC
        "mac": None if mac == cipher else mac if mac == recv_mac else f"{recv_mac}/{mac}",
    }
