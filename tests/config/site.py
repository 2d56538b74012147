"""A small, valid site on disk (real keys) for check/serve tests to break one way at a time."""

from __future__ import annotations

import re
from pathlib import Path

import asyncssh

VALID = """\
[gateway]
listen = "127.0.0.1:0"
host_keys = ["keys/host_ed25519"]

[zones.enterprise]
level = 4
networks = ["10.10.0.0/16"]

[zones.control]
level = 1
networks = ["192.168.0.0/24", "127.0.0.0/8"]

[areas.firmware]
zone = "control"
path = "data/areas/firmware"

[devices.plc-01]
zone = "control"
address = "192.168.0.10:22"
user = "admin"
identity = "keys/plc-01"
host_key = "{device_host_key}"
root = "/srv/plc"
commands = {{ sha256 = "sha256sum -- {{path}}" }}

[roles.engineer]
grants = [
  {{ target = "firmware", ops = ["list", "read", "write"], paths = ["*.bin"] }},
  {{ target = "devices/plc-*", ops = ["list", "read"] }},
]

[users.alice]
keys = ["{alice_key}"]
roles = ["engineer"]

[[conduits]]
name = "firmware-down"
from = "enterprise"
to = "control"
paths = ["firmware/*.bin", "devices/*"]
max_size = "512MiB"
"""


def _key(path: Path) -> asyncssh.SSHKey:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    return key


def make_site(base: Path) -> Path:
    """Write a valid ``conduit.toml`` and its key files under ``base``; return the file."""
    _key(base / "keys" / "host_ed25519")
    _key(base / "keys" / "plc-01")
    device = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    alice = _key(base / "alice").export_public_key().decode().strip()
    path = base / "conduit.toml"
    path.write_text(VALID.format(device_host_key=device, alice_key=alice + " alice@laptop"))
    return path


_FAKE_KEY = re.compile(r"ssh-ed25519 AAAA[A-Za-z0-9+/=.]*")
_IDENTITY = re.compile(r'^\s*identity\s*=\s*"([^"]+)"', re.MULTILINE)


def usable_copy(source: Path, folder: Path) -> Path:
    """``source`` copied into ``folder`` with real keys for its placeholder ones.

    Example policies carry readable stand-ins (``ssh-ed25519 AAAA...``) and
    name identity files that do not exist; ``conduit check`` builds what
    ``serve`` builds, so it needs real ones. Lines keep their numbers.
    """
    folder.mkdir(parents=True, exist_ok=True)
    text = source.read_text()

    def real(_match: re.Match[str]) -> str:
        key = asyncssh.generate_private_key("ssh-ed25519")
        return " ".join(key.export_public_key().decode().split()[:2])

    text = _FAKE_KEY.sub(real, text)
    for identity in _IDENTITY.findall(text):
        _key(folder / identity)
    path = folder / source.name
    path.write_text(text)
    return path
