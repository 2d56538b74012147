"""Devices that die, links that drop, credentials that must not leak."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from conduit.errors import Fault, StorageError
from conduit.storage.relay import open_device

from .conftest import Devices, device_config
from .helpers import disk_sha, sha, upload
from .sshd import start_sshd

CHUNK = 64 * 1024


@pytest.mark.parametrize("protocol", ["sftp", "scp"])
async def test_device_killed_mid_upload(devices: Devices, tmp_path: Path, protocol: str) -> None:
    client_pub = devices.identity.with_suffix(".pub").read_text().strip()
    victim = start_sshd(tmp_path / "victim", client_keys=[client_pub], sftp=protocol == "sftp")
    root = tmp_path / "root"
    commands = {"rename": "mv -f -- {old} {new}"} if protocol == "scp" else {}
    config = device_config(
        victim, devices.identity, root, protocol=protocol, commands=commands, connect_timeout=2.0
    )
    backend = open_device("victim", config, tmp_path / "state")
    data = os.urandom(CHUNK)
    try:
        handle = await backend.open_write(("fw.bin",))
        for i in range(4):
            await handle.write(i * CHUNK, data)
        victim.kill()
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            for i in range(4, 64):
                await handle.write(i * CHUNK, data)
            await handle.commit()
        assert info.value.fault is Fault.UNAVAILABLE
        # killed: the link breaks (unavailable) or the reconnect is refused (unreachable)
        assert info.value.reason in ("device unavailable", "device unreachable")
        assert time.monotonic() - started < 5
        assert not (root / "fw.bin").exists()
    finally:
        await backend.close()
        victim.stop()


async def test_link_drop_then_reconnect(devices: Devices, tmp_path: Path) -> None:
    client_pub = devices.identity.with_suffix(".pub").read_text().strip()
    device = start_sshd(tmp_path / "flaky", client_keys=[client_pub], sftp=True)
    root = tmp_path / "root"
    config = device_config(device, devices.identity, root, protocol="sftp")
    backend = open_device("flaky", config, tmp_path / "state")
    try:
        await upload(backend, ("a.bin",), b"first")
        handle = await backend.open_write(("b.bin",))
        await handle.write(0, b"half")
        device.kill_sessions()  # the link is cut, the device itself is fine
        with pytest.raises(StorageError) as info:
            await handle.write(4, b"more")
            await handle.commit()
        assert info.value.fault is Fault.UNAVAILABLE
        assert not (root / "b.bin").exists()
        # the next transfer reconnects; the aborted temp file was cleaned up
        payload = os.urandom(200_000)
        await upload(backend, ("b.bin",), payload)
        assert disk_sha(root / "b.bin") == sha(payload)
        assert backend.link.connects == 2
        assert not list(root.glob(".conduit-*"))
    finally:
        await backend.close()
        device.stop()


async def test_password_never_leaks(
    devices: Devices,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "S3cret-device-pw-7f3a"
    monkeypatch.setenv("CONDUIT_TEST_DEVICE_PW", secret)
    config = device_config(
        devices.sftp,
        None,
        tmp_path / "root",
        protocol="sftp",
        password_env="CONDUIT_TEST_DEVICE_PW",
    )
    backend = open_device("pw", config, tmp_path / "state")
    caplog.set_level(logging.DEBUG)
    logging.getLogger("asyncssh").setLevel(logging.DEBUG)
    try:
        with pytest.raises(StorageError) as info:
            await backend.stat(())
        assert info.value.reason == "device refused the gateway's credentials"
        assert secret not in f"{info.value} {info.value.detail} {info.value!r}"
        assert secret not in caplog.text
    finally:
        await backend.close()
        logging.getLogger("asyncssh").setLevel(logging.NOTSET)


async def test_missing_password_env_is_clear(devices: Devices, tmp_path: Path) -> None:
    config = device_config(
        devices.sftp,
        None,
        tmp_path / "root",
        protocol="sftp",
        password_env="CONDUIT_TEST_UNSET_VARIABLE",
    )
    backend = open_device("pw", config, tmp_path / "state")
    try:
        with pytest.raises(StorageError) as info:
            await backend.stat(())
        assert info.value.reason == "device credentials missing"
    finally:
        await backend.close()


def test_bad_templates_refused_at_construction(devices: Devices, tmp_path: Path) -> None:
    config = device_config(
        devices.scp, devices.identity, tmp_path / "r", protocol="scp", commands={"delete": "rm {x}"}
    )
    with pytest.raises(ValueError):
        open_device("bad", config, tmp_path / "state")
