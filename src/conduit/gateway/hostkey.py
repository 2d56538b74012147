"""The gateway's host key: the configured ones, or one made once and kept;
and the OpenSSH host certificates that vouch for them."""

from __future__ import annotations

import os
from typing import Any

import asyncssh

from conduit.config import Config
from conduit.errors import ListenError


def load_host_key(config: Config) -> list[asyncssh.SSHKey]:
    """The configured host keys, or the persistent Ed25519 key in the data folder."""
    if config.gateway.host_keys:
        return [asyncssh.read_private_key(path) for path in config.gateway.host_keys]
    path = config.gateway.data_dir / "host_ed25519"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="conduit host key")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key())
        path.with_suffix(".pub").write_bytes(key.export_public_key())
    return [asyncssh.read_private_key(path)]


def load_host_certificates(config: Config) -> list[asyncssh.SSHCertificate]:
    """The configured host certificates (``conduit check`` made sure each one
    is a host certificate for one of the host keys)."""
    return [asyncssh.read_certificate(path) for path in config.gateway.host_certificates]


def host_keypairs(
    keys: list[asyncssh.SSHKey],
    allowed: tuple[str, ...],
    certificates: list[asyncssh.SSHCertificate] | None = None,
) -> list[Any]:
    """The host keys, each offered only under the signature algorithms allowed
    (an RSA key would otherwise also sign with SHA-1 as ``ssh-rsa``); a key
    with a host certificate is offered with it too (``...-cert-v01@openssh.com``,
    allowed when its plain algorithm is)."""
    pairs = []
    for pair in asyncssh.load_keypairs(keys, certlist=certificates or []):
        algs = tuple(a for a in pair.host_key_algorithms if _plain(a.decode("ascii")) in allowed)
        if algs:
            pair.host_key_algorithms = algs
            pairs.append(pair)
    if not pairs:
        raise ListenError("no host key can sign with the host_keys algorithms configured")
    return pairs


def _plain(algorithm: str) -> str:
    """``rsa-sha2-512-cert-v01@openssh.com`` -> ``rsa-sha2-512``."""
    return algorithm.removesuffix("-cert-v01@openssh.com")
