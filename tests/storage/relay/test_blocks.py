"""Large pipelined device requests: what is sent and read is exactly the file, in order."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.errors import Fault, StorageError
from conduit.storage.relay import open_device, sftp
from conduit.storage.relay.blocks import BLOCK, BlockReader, Fetch, WriteGather
from conduit.storage.relay.readback import WrittenPrefix
from conduit.transfer.pipeline import Outcome, TransferRecord, Upload

from .conftest import Devices, device_config
from .helpers import sha
from .sshd import start_sshd


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=600), max_size=24), st.booleans())
def test_gathered_blocks_are_exactly_the_writes(sizes: list[int], gap: bool) -> None:
    gather = WriteGather(block=255)
    sent: list[tuple[int, bytes]] = []
    stream: list[tuple[int, bytes]] = []
    offset = 0
    for number, size in enumerate(sizes):
        if gap and number == len(sizes) // 2:
            offset += 3  # an out-of-order writer left a hole: never bridged
        data = bytes([number % 256]) * size
        stream.append((offset, data))
        sent.extend(gather.add(offset, data))
        offset += size
    sent.extend(gather.flush())
    assert gather.pending == 0
    # Every byte once, at its own offset; no block joins across a hole.
    expected = {o + i: b for o, d in stream for i, b in enumerate(d)}
    landed: dict[int, int] = {}
    for block_offset, block in sent:
        assert block, "an empty request"
        for i, byte in enumerate(block):
            assert block_offset + i not in landed
            landed[block_offset + i] = byte
    assert landed == expected
    # Small writes are joined up to the block size, larger ones cut to it:
    # no request is over the device's limit.
    assert all(len(block) <= 255 for _, block in sent)
    # And filled to it: a block followed by the next bytes of the file is a
    # whole one (a write that does not fit is cut, not left to the next block),
    # so a file takes as few device requests as the limit allows.
    for (block_offset, block), (next_offset, _) in itertools.pairwise(sent):
        if next_offset == block_offset + len(block):
            assert len(block) == 255, f"a {len(block)} byte block before more of the file"


def test_gathered_pieces_make_whole_device_blocks() -> None:
    """OpenSSH's 32 KiB pieces make 255 KiB requests (they made 224 KiB ones)."""
    gather = WriteGather()
    piece = os.urandom(32 * 1024)
    sent = [block for i in range(64) for block in gather.add(i * len(piece), piece)]
    sent.extend(gather.flush())
    assert [len(block) for _, block in sent] == [BLOCK] * 8 + [64 * len(piece) - 8 * BLOCK]
    assert b"".join(block for _, block in sent) == piece * 64


def fake_file(data: bytes, calls: list[int], fail_at: int | None = None) -> Fetch:
    async def fetch(offset: int, length: int) -> bytes:
        calls.append(offset)
        await asyncio.sleep(0)
        if fail_at is not None and offset >= fail_at:
            raise OSError("link cut")
        return data[offset : offset + length]

    return fetch


@settings(deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=5000), st.integers(min_value=1, max_value=6))
def test_block_reader_hands_out_the_file_in_order(size: int, depth: int) -> None:
    data = os.urandom(size)
    calls: list[int] = []

    async def read_all() -> bytes:
        reader = BlockReader(fake_file(data, calls), block=512, depth=depth)
        parts = []
        while block := await reader.next():
            parts.append(block)
        assert await reader.next() == b""
        return b"".join(parts)

    assert asyncio.run(read_all()) == data
    # Never more than `depth` requests beyond what was handed out.
    assert max(calls, default=0) <= size + depth * 512


async def test_block_reader_raises_the_first_failure_and_stops() -> None:
    calls: list[int] = []
    reader = BlockReader(fake_file(bytes(4096), calls, fail_at=1024), block=512, depth=4)
    assert len(await reader.next()) == 512
    assert len(await reader.next()) == 512
    with pytest.raises(OSError):
        await reader.next()
    assert reader.ended
    assert await reader.next() == b""


async def test_reads_in_any_order_come_from_the_device(devices: Devices, tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = device_config(devices.sftp, devices.identity, root, protocol="sftp")
    backend = open_device("ra", config, tmp_path / "state")
    data = os.urandom(3 * 255 * 1024 + 1000)
    (root / "f.bin").write_bytes(data)
    try:
        handle = await backend.open_read(("f.bin",))
        try:
            # front to back across block edges, then backwards, a skip, a
            # re-read inside the block just served, reads past the end.
            for offset, length in [
                (0, 32768),
                (32768, 300_000),
                (332_768, 32768),
                (100, 10),
                (700_000, 65536),
                (699_990, 20),
                (len(data) - 5, 32768),
                (len(data), 32768),
                (len(data) + 32768, 32768),
                (5, 5),
            ]:
                assert await handle.read(offset, length) == data[offset : offset + length]
            # Reads at once (a server serving a client's requests concurrently).
            offsets = [0, 40_000, 600_000, 80_000, 300_000, 120_000]
            results = await asyncio.gather(*(handle.read(o, 40_000) for o in offsets))
            assert results == [data[o : o + 40_000] for o in offsets]
        finally:
            await handle.close()
    finally:
        await backend.close()


def tamper_now(root: Path, offset: int) -> None:
    """Flip one byte of the device's temp file, as a faulty flash or an intruder might."""
    (temp,) = root.glob(".conduit-*.part")
    with temp.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize("where", ["tail", "sent"])
async def test_read_back_detects_one_changed_byte(
    devices: Devices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A changed byte fails the upload, whether the device's copy changed before the
    tail was read back (at the commit, after the last write) or a block reached the
    device altered (read back while the upload still runs)."""
    root = tmp_path / "root"
    config = device_config(devices.sftp, devices.identity, root, protocol="sftp")
    backend = open_device("rb", config, tmp_path / "state")
    data = os.urandom(8 * 255 * 1024 + 77)  # more blocks than are read at once
    original_finish = WrittenPrefix.finish
    original_send = sftp.SftpWriteHandle._send
    sent: list[int] = []

    def finish(self: WrittenPrefix, end: int) -> None:
        tamper_now(root, len(data) - 50)  # the last, partial block: read only from here on
        original_finish(self, end)

    async def send(self: sftp.SftpWriteHandle, file: Any, offset: int, block: bytes) -> None:
        sent.append(offset)
        if len(sent) == 3:
            block = bytes([block[0] ^ 0x01]) + block[1:]  # the hash saw the original
        await original_send(self, file, offset, block)

    if where == "tail":
        monkeypatch.setattr(WrittenPrefix, "finish", finish)
    else:
        monkeypatch.setattr(sftp.SftpWriteHandle, "_send", send)
    records: list[TransferRecord] = []

    async def report(record: TransferRecord) -> None:
        records.append(record)

    try:
        upload = Upload(
            await backend.open_write(("fw.bin",)), transfer="t", path="p", report=report
        )
        for offset in range(0, len(data), 32768):
            await upload.write(offset, data[offset : offset + 32768])
        with pytest.raises(StorageError) as info:
            await upload.commit()
        assert info.value.reason == "device copy does not match"
        assert f"sent sha256 {sha(data)}" in info.value.detail  # the pipeline's own hash
        assert [r.outcome for r in records] == [Outcome.FAILED]
        assert list(root.iterdir()) == []  # nothing under the final name, temp removed
        # Untampered, the same path passes and the custody hash is the pipeline's.
        monkeypatch.setattr(WrittenPrefix, "finish", original_finish)
        monkeypatch.setattr(sftp.SftpWriteHandle, "_send", original_send)
        handle = await backend.open_write(("fw.bin",))
        upload = Upload(handle, transfer="t2", path="p", report=report)
        for offset in range(0, len(data), 32768):
            await upload.write(offset, data[offset : offset + 32768])
        assert await upload.commit() == sha(data)
        assert handle.custody is not None and handle.custody.method == "read-back"
        assert handle.device_sha256 == sha(data) == sha((root / "fw.bin").read_bytes())
    finally:
        await backend.close()


async def test_hash_source_only_before_the_first_write(devices: Devices, tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = device_config(devices.sftp, devices.identity, root, protocol="sftp")
    backend = open_device("hs", config, tmp_path / "state")
    try:
        handle = await backend.open_write(("x.bin",))
        await handle.write(0, b"abc")
        with pytest.raises(StorageError):
            handle.hash_from(lambda: "0" * 64)
        await handle.abort()
        assert list(root.iterdir()) == []
    finally:
        await backend.close()


async def test_device_killed_during_read_back(
    devices: Devices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_pub = devices.identity.with_suffix(".pub").read_text().strip()
    victim = start_sshd(tmp_path / "victim", client_keys=[client_pub], sftp=True)
    root = tmp_path / "root"
    config = device_config(victim, devices.identity, root, protocol="sftp", connect_timeout=2.0)
    backend = open_device("victim", config, tmp_path / "state")
    original = sftp.SftpWriteHandle._read_back

    async def read_back(self: sftp.SftpWriteHandle) -> AsyncIterator[bytes]:
        async for number, chunk in _numbered(original(self)):
            if number == 2:
                victim.kill()  # pipelined reads are in flight now
            yield chunk

    monkeypatch.setattr(sftp.SftpWriteHandle, "_read_back", read_back)
    data = os.urandom(12 * 255 * 1024)
    try:
        handle = await backend.open_write(("fw.bin",))
        with pytest.raises(StorageError) as info:
            # The read-back runs beside the upload: the device dies mid-upload.
            for offset in range(0, len(data), 65536):
                await handle.write(offset, data[offset : offset + 65536])
            await handle.commit()
        assert info.value.fault is Fault.UNAVAILABLE
        assert not (root / "fw.bin").exists()
    finally:
        await backend.close()
        victim.stop()


async def _numbered(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    number = 0
    async for chunk in chunks:
        yield number, chunk
        number += 1


@pytest.mark.parametrize("lying", [False, True])
async def test_scp_device_compares_with_the_pipeline_hash(
    devices: Devices, tmp_path: Path, lying: bool
) -> None:
    commands = {"rename": "mv -f -- {old} {new}", "delete": "rm -f -- {path}"}
    commands["sha256"] = "echo " + "0" * 64 + " {path}" if lying else "sha256sum -- {path}"
    root = tmp_path / "root"
    config = device_config(devices.scp, devices.identity, root, protocol="scp", commands=commands)
    backend = open_device("scp-hash", config, tmp_path / "state")
    data = os.urandom(300_000)
    records: list[TransferRecord] = []

    async def report(record: TransferRecord) -> None:
        records.append(record)

    try:
        handle = await backend.open_write(("fw.bin",))
        upload = Upload(handle, transfer="t", path="p", report=report)
        for offset in range(0, len(data), 32768):
            await upload.write(offset, data[offset : offset + 32768])
        if lying:
            with pytest.raises(StorageError) as info:
                await upload.commit()
            assert info.value.reason == "device copy does not match"
            assert f"sent sha256 {sha(data)}" in info.value.detail
            assert [r.outcome for r in records] == [Outcome.FAILED]
            assert list(root.iterdir()) == []
        else:
            assert await upload.commit() == sha(data)
            assert handle.local_sha256 == handle.device_sha256 == sha(data)
            assert (root / "fw.bin").read_bytes() == data
    finally:
        await backend.close()
