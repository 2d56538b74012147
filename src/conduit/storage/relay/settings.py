"""What a device's settings need before the relay can use them.

The relay connects lazily, so a missing key file, an unset password variable
or a garbled pinned host key would otherwise surface only when the first user
opens ``/devices/NAME``, as "device unavailable". :func:`device_problems`
finds all of that from the policy file alone, without contacting the device:
``conduit check``, ``serve`` and a reload all call it (through
:func:`conduit.site.build.inspect`), so a file that passes has devices the
relay can at least try.
"""

from __future__ import annotations

import os

import asyncssh

from conduit.config.model import DeviceConfig
from conduit.storage.relay import commands
from conduit.storage.relay.connection import split_address

ADDRESS_HELP = 'must be HOST:PORT ([v6]:PORT for IPv6), e.g. "192.168.0.10:22"'

Finding = tuple[tuple[str, ...], str]
"""(key below ``devices.NAME``, message); an empty key means the device's table."""


def address_problem(address: str) -> str | None:
    """Why ``address`` is not ``HOST:PORT`` (None when it is)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()):
        return ADDRESS_HELP
    if not 1 <= int(port) <= 65535:
        return f"port {port} is outside 1-65535"
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        return ADDRESS_HELP
    return None


def _file_problem(path: os.PathLike[str]) -> str | None:
    try:
        with open(path, "rb"):
            return None
    except FileNotFoundError:
        return f"{path}: no such file"
    except IsADirectoryError:
        return f"{path}: is a folder, not a file"
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})"


def device_problems(device: DeviceConfig) -> list[Finding]:
    """Every reason the relay could not use ``device`` (files are read, not kept)."""
    found: list[Finding] = []
    if not device.root.startswith("/"):
        found.append((("root",), f"{device.root!r} must be an absolute path on the device"))
    for operation, template in device.commands.items():
        try:
            commands.check_template(operation, template)
        except ValueError as exc:
            found.append((("commands", operation), str(exc)))
    why = address_problem(device.address)
    if why:
        found.append((("address",), why))

    # Credentials: without any, asyncssh would fall back to the gateway
    # account's own ~/.ssh keys, which is never what the policy meant.
    if device.identity is None and device.password_file is None and device.password_env is None:
        found.append(((), "no credentials: set identity, password_file or password_env"))
    if device.identity is not None:
        why = _file_problem(device.identity)
        if why is None:
            try:
                asyncssh.read_private_key(device.identity)
            except (asyncssh.KeyImportError, ValueError):
                why = (
                    f"{device.identity}: not an OpenSSH private key"
                    " (or protected by a passphrase, which the relay cannot type)"
                )
        if why:
            found.append((("identity",), why))
    if device.password_file is not None:
        why = _file_problem(device.password_file)
        if why:
            found.append((("password_file",), why))
    if device.password_env is not None and device.password_env not in os.environ:
        found.append(
            (
                ("password_env",),
                f"environment variable {device.password_env} is not set"
                " (it must be set where the gateway runs)",
            )
        )

    # Host key trust: pinned key, known_hosts, or trust on first use.
    if device.host_key is not None:
        try:
            asyncssh.import_public_key(device.host_key)
        except (asyncssh.KeyImportError, ValueError):
            found.append(
                (
                    ("host_key",),
                    "not an OpenSSH public key (paste the device's host key .pub line,"
                    ' "ssh-ed25519 AAAA...")',
                )
            )
    if device.known_hosts is not None:
        why = _file_problem(device.known_hosts)
        if why is None:
            try:
                known = asyncssh.read_known_hosts(str(device.known_hosts))
            except (OSError, ValueError, asyncssh.Error):
                why = f"{device.known_hosts}: not an OpenSSH known_hosts file"
            else:
                host, port = split_address(device.address)
                pinned = device.host_key is not None or device.trust_on_first_use
                if not known.match(host, host, port)[0] and not pinned:
                    shown = host if port == 22 else f"[{host}]:{port}"
                    why = f"{device.known_hosts} has no host key for {shown}"
        if why:
            found.append((("known_hosts",), why))
    if device.host_key is None and device.known_hosts is None and not device.trust_on_first_use:
        found.append(
            (
                (),
                "no host key to check the device against: set host_key, known_hosts"
                " or trust_on_first_use = true",
            )
        )
    return found
