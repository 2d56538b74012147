"""Downloads hashed beside the event loop: the hash is of exactly the bytes served.

The relay's read handle hashes what it hands out on a worker thread and lends
that to the transfer pipeline. Hostile cases: a device changing a byte while
blocks are read ahead, a skip, a device killed mid-read-ahead, a client gone
with hashing in flight; real sshd devices.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.errors import Fault, StorageError
from conduit.storage.relay import hashing, open_device
from conduit.storage.relay.hashing import INLINE, ThreadHasher
from conduit.storage.relay.sftpread import SftpReadHandle
from conduit.transfer.pipeline import Download, Outcome, TransferRecord

from .conftest import Devices, device_config
from .helpers import sha
from .sshd import start_sshd

BLOCK = 255 * 1024


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=3 * INLINE), max_size=30))
def test_thread_hasher_hashes_in_order(sizes: list[int]) -> None:
    # Pieces below and above the inline size, mixed: the order must hold.
    pieces = [os.urandom(size) for size in sizes]

    async def run() -> str:
        hasher = ThreadHasher()
        for piece in pieces:
            hasher.feed(memoryview(piece) if len(piece) % 2 else piece)
            await hasher.room(INLINE)
            assert hasher.queued <= INLINE + len(piece)
        return await hasher.hexdigest()

    assert asyncio.run(run()) == hashlib.sha256(b"".join(pieces)).hexdigest()


async def test_a_waiter_cancelled_loses_no_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    pool = ThreadPoolExecutor(1)

    class Gated:
        def submit(self, fn: Callable[..., None], *args: object) -> Future[None]:
            return pool.submit(lambda: (gate.wait(10), fn(*args))[1])

    monkeypatch.setattr(hashing, "_executor", Gated)
    hasher = ThreadHasher()
    data = os.urandom(8 * BLOCK)
    for offset in range(0, len(data), BLOCK):
        hasher.feed(data[offset : offset + BLOCK])
    waiter = asyncio.ensure_future(hasher.hexdigest())
    await asyncio.sleep(0.01)
    assert not waiter.done() and hasher.queued == len(data)  # held at the gate
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    # The job went on; the digest is still of every byte, in order.
    assert await hasher.hexdigest() == sha(data)
    assert hasher.queued == 0
    pool.shutdown()


def recorder() -> tuple[list[TransferRecord], object]:
    records: list[TransferRecord] = []

    async def report(record: TransferRecord) -> None:
        records.append(record)

    return records, report


async def serve(download: Download, chunk: int = 32768, start: int = 0) -> bytes:
    parts, offset = [], start
    while data := await download.read(offset, chunk):
        parts.append(data)
        offset += len(data)
    return b"".join(parts)


async def test_download_hash_is_lent_by_the_relay(devices: Devices, tmp_path: Path) -> None:
    root = tmp_path / "root"
    backend = open_device(
        "h", device_config(devices.sftp, devices.identity, root, protocol="sftp"), tmp_path / "s"
    )
    data = os.urandom(9 * BLOCK + 4321)
    (root / "f.bin").write_bytes(data)
    records, report = recorder()
    try:
        handle = await backend.open_read(("f.bin",))
        assert isinstance(handle, SftpReadHandle)
        download = Download(handle, transfer="t", path="p", report=report)  # type: ignore[arg-type]
        # A re-read of bytes already served (a client retrying) changes nothing.
        assert await download.read(0, 1000) == data[:1000]
        assert await download.read(0, 500) == data[:500]
        assert (await download.read(1000, 31768)) + await serve(download, start=32768) == data[
            1000:
        ]
        await download.close()
        (record,) = records
        assert record.outcome is Outcome.SUCCESS and record.sha256 == sha(data)
        assert download._hash.hexdigest() == sha(b"")  # the pipeline did not hash again
    finally:
        await backend.close()


async def test_device_changing_a_byte_is_in_the_hash(devices: Devices, tmp_path: Path) -> None:
    # The hash must vouch for what the client got, not for what the file was.
    root = tmp_path / "root"
    backend = open_device(
        "c", device_config(devices.sftp, devices.identity, root, protocol="sftp"), tmp_path / "s"
    )
    data = os.urandom(12 * BLOCK)
    (root / "f.bin").write_bytes(data)
    records, report = recorder()
    try:
        download = Download(
            await backend.open_read(("f.bin",)), transfer="t", path="p", report=report
        )
        first = await download.read(0, 32768)
        with (root / "f.bin").open("r+b") as f:  # beyond the blocks read ahead so far
            f.seek(len(data) - 7)
            f.write(bytes([data[-7] ^ 0x80]))
        served = first + await serve(download, start=len(first))
        await download.close()
        assert served != data and len(served) == len(data)
        (record,) = records
        assert record.sha256 == sha(served) != sha(data)
    finally:
        await backend.close()


async def test_a_skip_vouches_for_nothing(devices: Devices, tmp_path: Path) -> None:
    root = tmp_path / "root"
    backend = open_device(
        "k", device_config(devices.sftp, devices.identity, root, protocol="sftp"), tmp_path / "s"
    )
    data = os.urandom(3 * BLOCK)
    (root / "f.bin").write_bytes(data)
    records, report = recorder()
    try:
        handle = await backend.open_read(("f.bin",))
        download = Download(handle, transfer="t", path="p", report=report)
        await download.read(0, 32768)
        await download.read(65536, 32768)  # skipped 32 KiB
        await download.read(32768, 32768)  # and came back for them
        await serve(download, start=98304)
        await download.close()
        (record,) = records
        assert record.sha256 is None
        assert await handle.served_sha256() is None  # the handle agrees: no hash
    finally:
        await backend.close()


async def test_device_killed_mid_read_ahead(devices: Devices, tmp_path: Path) -> None:
    client_pub = devices.identity.with_suffix(".pub").read_text().strip()
    victim = start_sshd(tmp_path / "victim", client_keys=[client_pub], sftp=True)
    root = tmp_path / "root"
    config = device_config(victim, devices.identity, root, protocol="sftp", connect_timeout=2.0)
    backend = open_device("v", config, tmp_path / "s")
    (root / "f.bin").write_bytes(os.urandom(40 * BLOCK))
    records, report = recorder()
    try:
        download = Download(
            await backend.open_read(("f.bin",)), transfer="t", path="p", report=report
        )
        await download.read(0, 32768)  # read-ahead in flight now
        victim.kill()
        with pytest.raises(StorageError) as info:
            await serve(download, start=32768)
        assert info.value.fault is Fault.UNAVAILABLE
        await download.close(error="device gone")
        (record,) = records
        assert record.outcome is Outcome.FAILED and record.sha256 is None
    finally:
        await backend.close()
        victim.stop()


async def test_client_gone_with_hashing_in_flight(devices: Devices, tmp_path: Path) -> None:
    root = tmp_path / "root"
    backend = open_device(
        "g", device_config(devices.sftp, devices.identity, root, protocol="sftp"), tmp_path / "s"
    )
    data = os.urandom(30 * BLOCK)
    (root / "f.bin").write_bytes(data)
    records, report = recorder()
    try:
        handle = await backend.open_read(("f.bin",))
        assert isinstance(handle, SftpReadHandle)
        download = Download(handle, transfer="t", path="p", report=report)
        await download.read(0, 10 * BLOCK)  # blocks queued for the hasher
        reading = asyncio.ensure_future(download.read(10 * BLOCK, 10 * BLOCK))
        await asyncio.sleep(0)  # the read has asked the device; it cannot have its answer yet
        assert not reading.done()
        reading.cancel()  # the client's session ends mid-read
        with pytest.raises(asyncio.CancelledError):
            await reading
        await download.close(error="client gone")
        (record,) = records
        assert record.outcome is Outcome.FAILED and record.sha256 is None
        hasher = handle._hasher
        assert hasher is None or hasher.queued == 0  # nothing hashing after close
    finally:
        await backend.close()
