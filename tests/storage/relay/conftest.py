from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conduit.config.model import DeviceConfig

from .sshd import Sshd, keygen, start_sshd


@dataclass
class Devices:
    identity: Path
    sftp: Sshd
    scp: Sshd


@pytest.fixture(scope="session")
def devices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devices]:
    base = tmp_path_factory.mktemp("devices")
    identity = base / "gateway_ed25519"
    client_pub = keygen(identity, "conduit-gateway")
    sftp = start_sshd(base / "sftp", client_keys=[client_pub], sftp=True)
    scp = start_sshd(base / "scp", client_keys=[client_pub], sftp=False)
    yield Devices(identity, sftp, scp)
    sftp.stop()
    scp.stop()


def device_config(
    sshd: Sshd, identity: Path | None, root: Path, *, protocol: str, **extra: object
) -> DeviceConfig:
    root.mkdir(parents=True, exist_ok=True)
    values: dict[str, object] = {
        "zone": "control",
        "address": sshd.address,
        "user": "root",
        "identity": identity,
        "host_key": sshd.host_key,
        "protocols": [protocol],
        "root": str(root),
        "connect_timeout": 5.0,
    }
    values.update(extra)
    return DeviceConfig.model_validate(values)
