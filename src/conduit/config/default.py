"""The embedded default: what ``conduit serve`` runs in a folder with no ``conduit.toml``.

A loopback-only demo: one zone covering 127.0.0.0/8 and ::1, an ``/inbox`` the
invoking user may fill and an ``/outbox`` they may only read, and that user's
own ``~/.ssh/*.pub`` keys. Nothing here is reachable from another machine.
The defender is on; it never bans 127.0.0.1 or ::1.
"""

from __future__ import annotations

import getpass
from ipaddress import ip_network
from pathlib import Path

from conduit.config.model import (
    AreaConfig,
    Config,
    GatewayConfig,
    Grant,
    Op,
    RoleConfig,
    UserConfig,
    ZoneConfig,
)

DEFAULT_LISTEN = "127.0.0.1:2222"


def local_public_keys(home: Path | None = None) -> list[str]:
    """Every public key line in ``~/.ssh/*.pub`` (comments and blank lines skipped)."""
    ssh_dir = (home or Path.home()) / ".ssh"
    keys: list[str] = []
    for pub in sorted(ssh_dir.glob("*.pub")):
        try:
            text = pub.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        keys.extend(
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        )
    return keys


def embedded(
    workdir: Path,
    *,
    user: str | None = None,
    keys: list[str] | None = None,
    listen: str = DEFAULT_LISTEN,
) -> Config:
    """The demo policy rooted at ``workdir`` for ``user`` (default: the invoking user)."""
    user = user or getpass.getuser()
    data = workdir / "data"
    return Config(
        gateway=GatewayConfig(listen=listen, data_dir=data),
        audit={"journal": data / "audit"},  # type: ignore[arg-type]
        # the defender on, but never against this host's own addresses
        auth={"defender": {"allow": ["127.0.0.1/32", "::1/128"]}},  # type: ignore[arg-type]
        zones={
            "local": ZoneConfig(
                level=3,
                networks=[ip_network("127.0.0.0/8"), ip_network("::1/128")],
                description="this machine only (embedded default)",
            )
        },
        areas={
            "inbox": AreaConfig(zone="local", path=data / "areas" / "inbox"),
            "outbox": AreaConfig(zone="local", path=data / "areas" / "outbox"),
        },
        roles={
            "demo": RoleConfig(
                grants=[
                    Grant(
                        target="inbox",
                        ops=[Op.LIST, Op.READ, Op.WRITE, Op.MKDIR, Op.RENAME, Op.DELETE],
                    ),
                    Grant(target="outbox", ops=[Op.LIST, Op.READ]),
                ]
            )
        },
        users={
            user: UserConfig(keys=keys if keys is not None else local_public_keys(), roles=["demo"])
        },
    )
