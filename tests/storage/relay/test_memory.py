"""Relayed uploads stream: memory does not grow with the file size."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from conduit.storage.relay import open_device

from .conftest import Devices, device_config
from .helpers import disk_sha

CHUNK = 256 * 1024
SIZE = 24 * 1024 * 1024


@pytest.mark.parametrize("protocol", ["sftp", "scp"])
async def test_upload_memory_is_bounded(devices: Devices, tmp_path: Path, protocol: str) -> None:
    sshd = devices.sftp if protocol == "sftp" else devices.scp
    root = tmp_path / "root"
    config = device_config(sshd, devices.identity, root, protocol=protocol)
    backend = open_device(f"mem-{protocol}", config, tmp_path / "state")
    block = os.urandom(CHUNK)
    expected = hashlib.sha256()
    try:
        await backend.stat(())  # connect outside the measurement
        tracemalloc.start()
        handle = await backend.open_write(("big.img",))
        for offset in range(0, SIZE, CHUNK):
            await handle.write(offset, block)
            expected.update(block)
        await handle.commit()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert handle.device_sha256 == expected.hexdigest()
        assert disk_sha(root / "big.img") == expected.hexdigest()
        assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a {SIZE} byte file"
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        await backend.close()
