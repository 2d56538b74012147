"""Where a copy goes and how to get there: ``user@host:path``, keys, jumps, host keys.

An :class:`Endpoint` holds what ``ssh`` would take from its command line; what
it leaves out (``None``) asyncssh takes from ``~/.ssh/config`` exactly as
OpenSSH would (``Host`` aliases, ``HostName``, ``Port``, ``User``,
``IdentityFile``, ``ProxyJump``, ``UserKnownHostsFile``), so an alias that
works for ``scp`` works here. Algorithms are not taken from it: they are the
gateway's lists (:mod:`conduit.config.crypto`), changed per endpoint with
``crypto``. Host keys are checked against a pinned key
(``host_key``), a given ``known_hosts`` file, or else the user's
``~/.ssh/known_hosts``; a host found in none of them is refused (no
"trust on first use" prompt: scripts have nobody to ask).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncssh

from conduit.client.errors import ClientError
from conduit.config.crypto import CryptoConfig, effective

DEFAULT_CONNECT_TIMEOUT = 15.0
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 3

_REMOTE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]/]+\]|[^:/\[\]]+):(?P<path>.*)$")


@dataclass(frozen=True)
class Endpoint:
    """One SSH server and how to reach it (``None``: as ``~/.ssh/config`` says)."""

    host: str
    port: int | None = None
    user: str | None = None
    identity: Path | None = None
    jump: str | None = None
    """``[user@]host[:port]`` to go through first (``ssh -J``): same keys and known_hosts
    (the ``host_key`` pin is the target's only)."""
    host_key: str | None = None
    """A pinned public key (``ssh-ed25519 AAAA...``): only this key is accepted."""
    known_hosts: Path | None = None
    ssh_config: tuple[Path, ...] | None = None
    """``ssh_config`` files to read; ``None`` reads ``~/.ssh/config`` if it exists."""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    crypto: CryptoConfig | None = None
    """Algorithm lists, as ``[devices.NAME.crypto]`` in the gateway's policy; ``None``:
    modern only (no SHA-1, MD5 or CBC), AES-GCM first."""
    use_agent: bool = True
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Further :func:`asyncssh.connect` options (escape hatch; not validated)."""

    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"

    def with_host(self, spec: str) -> Endpoint:
        """This endpoint's keys and checks, for another ``[user@]host[:port]`` (a jump)."""
        user, _, rest = spec.rpartition("@")
        host, port = split_host_port(rest)
        return replace(self, host=host, port=port, user=user or self.user, jump=None, host_key=None)


def split_host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:22``, ``[::1]:22`` -> (host, port or None)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ClientError(f"{text!r}: no host name")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ClientError(f"{text!r}: port must be a number from 1 to 65535")
    return host, int(port) if port else None


def parse_remote(spec: str) -> tuple[str | None, str, str] | None:
    """``[user@]host:path`` -> (user, host, path); ``None`` for a local path.

    As scp: a colon before any slash makes it remote; ``./a:b`` and ``/x:y``
    are local. ``[v6]:path`` takes an IPv6 address.
    """
    match = _REMOTE.match(spec)
    if match is None:
        return None
    host = match["host"].strip("[]")
    return match["user"], host, match["path"]


def _known_hosts(endpoint: Endpoint) -> Any:
    if endpoint.host_key:
        try:
            key = asyncssh.import_public_key(endpoint.host_key)
        except (asyncssh.KeyImportError, ValueError):
            raise ClientError(f"{endpoint.host}: the pinned host key is not a public key") from None
        return ([key], [], [])
    if endpoint.known_hosts:
        if not endpoint.known_hosts.is_file():
            raise ClientError(f"{endpoint.known_hosts}: no such known_hosts file")
        return str(endpoint.known_hosts)
    return ()


def connect_options(endpoint: Endpoint) -> dict[str, Any]:
    """Keyword arguments for :func:`asyncssh.connect` (only what was set)."""
    algs = effective(endpoint.crypto)
    options: dict[str, Any] = {
        "known_hosts": _known_hosts(endpoint),
        "connect_timeout": endpoint.connect_timeout,
        # The gateway's own lists (config.crypto): no SHA-1/MD5/CBC by default, and
        # AES-GCM first (asyncssh runs it faster than ChaCha20-Poly1305).
        "kex_algs": list(algs.kex),
        "encryption_algs": list(algs.ciphers),
        "mac_algs": list(algs.macs),
        "server_host_key_algs": list(algs.host_keys),
        # Firmware and archives do not compress; zlib would only cost CPU.
        "compression_algs": ["none"],
        # A link cut without a FIN is noticed after about 3 intervals.
        "keepalive_interval": KEEPALIVE_INTERVAL,
        "keepalive_count_max": KEEPALIVE_COUNT_MAX,
        "config": () if endpoint.ssh_config is None else [str(p) for p in endpoint.ssh_config],
    }
    if endpoint.port is not None:
        options["port"] = endpoint.port
    if endpoint.user is not None:
        options["username"] = endpoint.user
    if endpoint.identity is not None:
        if not endpoint.identity.is_file():
            raise ClientError(f"{endpoint.identity}: no such key file")
        options["client_keys"] = [str(endpoint.identity)]
    if not endpoint.use_agent:
        options["agent_path"] = None
    options.update(endpoint.options)
    return options


async def open_connection(
    endpoint: Endpoint,
) -> tuple[asyncssh.SSHClientConnection, list[asyncssh.SSHClientConnection]]:
    """Connect (through ``endpoint.jump`` first, if any); asyncssh errors propagate.

    Returns the connection and the jump connections under it, which the
    caller closes after it (asyncssh leaves a tunnel it was given open).
    """
    options = connect_options(endpoint)
    jumps: list[asyncssh.SSHClientConnection] = []
    if endpoint.jump:
        jump, below = await open_connection(endpoint.with_host(endpoint.jump))
        jumps = [jump, *below]
        options["tunnel"] = jump
    try:
        return await asyncssh.connect(endpoint.host, **options), jumps
    except BaseException:
        for conn in jumps:
            conn.close()
        raise
