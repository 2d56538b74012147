"""Real devices for the client: a few OpenSSH ``sshd`` on loopback, shared by the package.

``sftp`` has an SFTP server, ``scp`` has none (legacy SCP only), ``hang`` is a
TCP listener that accepts and never speaks, ``closed`` a port nothing listens
on. A wrong host key is the ``scp`` device's key pinned for the ``sftp`` one.
One set serves every module of the package.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conduit.client import Client
from tests.storage.relay.sshd import Sshd, free_port, keygen, start_sshd


@dataclass
class Devices:
    identity: Path
    stranger: Path
    """A key no device accepts."""
    sftp: Sshd
    scp: Sshd
    hang: int
    closed: int
    base: Path

    def client(self, sshd: Sshd, **options: Any) -> Client:
        values: dict[str, Any] = {
            "port": sshd.port,
            "user": "root",
            "identity": self.identity,
            "host_key": sshd.host_key,
            "ssh_config": (),
            "connect_timeout": 20.0,
            "agent_path": None,
        }
        values.update(options)
        return Client("127.0.0.1", **values)


@pytest.fixture(scope="package")
def devices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devices]:
    base = tmp_path_factory.mktemp("client-devices")
    identity = base / "ops_ed25519"
    pub = keygen(identity, "ops")
    stranger = base / "stranger_ed25519"
    keygen(stranger, "stranger")
    sftp = start_sshd(base / "sftp", client_keys=[pub], sftp=True)
    scp = start_sshd(base / "scp", client_keys=[pub], sftp=False)
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)
    try:
        yield Devices(identity, stranger, sftp, scp, hang.getsockname()[1], free_port(), base)
    finally:
        hang.close()
        sftp.stop()
        scp.stop()
