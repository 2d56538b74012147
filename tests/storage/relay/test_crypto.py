"""A legacy device that speaks only SHA-1 algorithms, behind a modern gateway.

The gateway's connection to a device offers the modern defaults; a device
whose sshd knows only ``diffie-hellman-group14-sha1`` and ``hmac-sha1`` is
refused until its own ``[devices.NAME.crypto]`` widens the lists, and then
the link says what was agreed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit._asyncssh import tuning
from conduit.config.crypto import CryptoConfig
from conduit.errors import StorageError
from conduit.storage.relay import open_device

from .conftest import Devices, device_config
from .helpers import download, upload
from .sshd import Sshd, start_sshd

LEGACY = (
    "KexAlgorithms diffie-hellman-group14-sha1",
    "MACs hmac-sha1",
    "Ciphers aes128-ctr",
)


@pytest.fixture(scope="module")
def legacy(devices: Devices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    tuning.apply()  # as the gateway does: records the agreed key exchange
    client_pub = devices.identity.with_suffix(".pub").read_text().strip()
    sshd = start_sshd(
        tmp_path_factory.mktemp("legacy"), client_keys=[client_pub], sftp=True, extra=LEGACY
    )
    yield sshd
    sshd.stop()


async def test_legacy_device_refused_by_default(
    legacy: Sshd, devices: Devices, tmp_path: Path
) -> None:
    config = device_config(legacy, devices.identity, tmp_path / "root", protocol="sftp")
    backend = open_device("old-plc", config, tmp_path / "state")
    try:
        with pytest.raises(StorageError) as refused:
            await backend.stat(())
        # sshd closes as soon as it sees no common algorithm; when its close
        # (a TCP reset) overtakes its KEXINIT in our receive buffer, asyncssh
        # sees the connection lost instead of judging the offer itself. Both
        # are the same refusal: nothing legacy was agreed.
        detail = str(refused.value.detail)
        assert "KeyExchangeFailed" in detail or "connect: ConnectionLost" in detail, detail
    finally:
        await backend.close()


async def test_legacy_device_with_its_own_lists(
    legacy: Sshd, devices: Devices, tmp_path: Path
) -> None:
    crypto = CryptoConfig(kex="+diffie-hellman-group14-sha1", macs="+hmac-sha1")
    config = device_config(
        legacy, devices.identity, tmp_path / "root", protocol="sftp", crypto=crypto
    )
    backend = open_device("old-plc", config, tmp_path / "state")
    try:
        await upload(backend, ("fw.bin",), b"firmware")
        assert await download(backend, ("fw.bin",)) == b"firmware"
        assert backend.link.algorithms == {
            "kex": "diffie-hellman-group14-sha1",
            "host_key_algorithm": "ssh-ed25519",
            "cipher": "aes128-ctr",
            "mac": "hmac-sha1",
        }
    finally:
        await backend.close()
