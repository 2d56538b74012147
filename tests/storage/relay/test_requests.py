"""One device request per block: short answers completed, limits obeyed, faults mid-download."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncssh
import pytest

from conduit.errors import Fault, StorageError
from conduit.storage.relay import open_device
from conduit.storage.relay import sftp as relay_sftp
from conduit.storage.relay.blocks import BLOCK, BlockReader, block_fetcher, open_args
from conduit.storage.relay.sftpread import SftpReadHandle
from conduit.transfer.pipeline import Download, Outcome, TransferRecord

from .conftest import Devices, device_config
from .helpers import sha
from .sshd import start_sshd


class SlotLink:
    """The two calls ``in_slot`` makes on a device link, counted."""

    def __init__(self) -> None:
        self.taken = 0

    async def acquire_slot(self) -> None:
        self.taken += 1

    def release_slot(self) -> None:
        self.taken -= 1


class StingyFile:
    """A device file whose server answers at most ``most`` bytes per read (SFTP allows it)."""

    def __init__(self, data: bytes, most: int) -> None:
        self.data = data
        self.most = most
        self.reads: list[tuple[int, int]] = []

    async def read(self, size: int, offset: int) -> bytes:
        self.reads.append((offset, size))
        await asyncio.sleep(0)
        return self.data[offset : offset + min(size, self.most)]


@pytest.mark.parametrize("end_known", [True, False])
async def test_short_answers_are_asked_again(end_known: bool) -> None:
    data = os.urandom(5 * 1000 + 123)
    file = StingyFile(data, most=300)
    link: Any = SlotLink()
    fetch = block_fetcher(link, file, len(data) if end_known else None)  # type: ignore[arg-type]
    reader = BlockReader(fetch, block=1000, depth=3)
    blocks = []
    while block := await reader.next():
        blocks.append(block)
    # Whole blocks despite the short answers: a short one would have ended the file.
    assert b"".join(blocks) == data
    assert [len(b) for b in blocks] == [1000] * 5 + [123]
    assert link.taken == 0
    # The last block ends where the file was known to end: not asked again there.
    past_end = [r for r in file.reads if r[0] >= len(data)]
    assert (past_end == []) if end_known else past_end


@pytest.mark.parametrize("extra_at", [0, 2])
async def test_an_answer_longer_than_asked_is_refused(extra_at: int) -> None:
    """A device that answers more bytes than a read asked for (first answer, or the
    re-ask after a short one) is refused: its bytes would land at the wrong offsets."""
    data = os.urandom(5000)

    class Greedy(StingyFile):
        async def read(self, size: int, offset: int) -> bytes:
            answer = await super().read(size, offset)
            return answer + b"X" * 10 if len(self.reads) > extra_at else answer

    file = Greedy(data, most=300 if extra_at else 5000)
    fetch = block_fetcher(SlotLink(), file, len(data))  # type: ignore[arg-type]
    with pytest.raises(asyncssh.SFTPBadMessage, match="to a read of"):
        await fetch(0, 1000)


async def test_a_file_that_shrank_ends_the_blocks() -> None:
    data = os.urandom(4000)
    file = StingyFile(data[:2500], most=300)  # cut after the size was taken
    fetch = block_fetcher(SlotLink(), file, len(data))  # type: ignore[arg-type]
    reader = BlockReader(fetch, block=1000, depth=2)
    blocks = []
    while block := await reader.next():
        blocks.append(block)
    assert b"".join(blocks) == data[:2500]
    assert reader.ended


def test_whole_requests_only_where_the_device_takes_a_block() -> None:
    def sftp(read: int, write: int) -> Any:
        return SimpleNamespace(limits=asyncssh.SFTPLimits(0, read, write, 0))

    whole = {"block_size": 0}
    assert open_args(sftp(BLOCK, BLOCK)) == whole
    assert open_args(sftp(4 << 20, 4 << 20)) == whole
    # No limits@openssh.com: asyncssh's 16 KiB requests, one at a time per slot.
    single = {"block_size": -1, "max_requests": 1}
    assert open_args(sftp(16384, 16384)) == single
    assert open_args(sftp(BLOCK, 16384)) == single


async def test_a_device_without_limits_gets_max_concurrency_requests(
    devices: Devices, tmp_path: Path
) -> None:
    """A device that advertised no ``limits@openssh.com`` (asyncssh then uses its
    safe 16 KiB) never has more SFTP requests in flight than its
    ``max_concurrency``: a 255 KiB block split into 16 requests must not send
    them at once, nor a close go out beside the reads given up on. Counted at
    the client's request call, on a real sshd."""
    root = tmp_path / "root"
    config = device_config(devices.sftp, devices.identity, root, protocol="sftp", max_concurrency=2)
    backend = open_device("old", config, tmp_path / "state")
    data = os.urandom(3 * BLOCK + 999)
    (root / "f.bin").write_bytes(data)
    try:
        sftp = await backend.link.sftp()
        handler = sftp._handler
        handler.limits = asyncssh.SFTPLimits(0, 16384, 16384, 0)  # as if never advertised
        request = handler._make_request
        in_flight = most = 0

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await request(*args, **kwargs)
            finally:
                in_flight -= 1

        handler._make_request = counted
        handle = await backend.open_read(("f.bin",))
        got = b""
        while chunk := await handle.read(len(got), 32768):
            got += chunk
        await handle.close()
        assert got == data
        writer = await backend.open_write(("g.bin",))
        await writer.write(0, data)
        await writer.commit()
        assert (root / "g.bin").read_bytes() == data
        assert 1 <= most <= 2, f"{most} requests in flight with max_concurrency = 2"
    finally:
        await backend.close()


async def test_openssh_device_gets_whole_requests(devices: Devices, tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = device_config(devices.sftp, devices.identity, root, protocol="sftp")
    backend = open_device("whole", config, tmp_path / "state")
    data = os.urandom(3 * BLOCK + 999)
    (root / "f.bin").write_bytes(data)
    try:
        handle = await backend.open_read(("f.bin",))
        assert isinstance(handle, SftpReadHandle)
        assert handle._file.read_len == 0  # one SFTP request per block, no asyncssh reader
        got = b""
        while chunk := await handle.read(len(got), 32768):
            got += chunk
        await handle.close()
        assert got == data
        # Writes bigger than a block are cut to it (the device refuses more).
        writer = await backend.open_write(("g.bin",))
        await writer.write(0, data)
        await writer.commit()
        assert (root / "g.bin").read_bytes() == data
        assert writer.device_sha256 == sha(data)
    finally:
        await backend.close()


async def _recorded_download(
    backend: Any, path: tuple[str, ...]
) -> tuple[Download, list[TransferRecord]]:
    """A download of ``path`` through the pipeline, and the records it reports."""
    records: list[TransferRecord] = []

    async def report(record: TransferRecord) -> None:
        records.append(record)

    handle = await backend.open_read(path)
    return Download(handle, transfer="t", path="p", report=report), records


async def test_device_killed_mid_download(devices: Devices, tmp_path: Path) -> None:
    client_pub = devices.identity.with_suffix(".pub").read_text().strip()
    victim = start_sshd(tmp_path / "victim", client_keys=[client_pub], sftp=True)
    root = tmp_path / "root"
    config = device_config(victim, devices.identity, root, protocol="sftp", connect_timeout=2.0)
    backend = open_device("victim", config, tmp_path / "state")
    data = os.urandom(40 * BLOCK)
    (root / "f.bin").write_bytes(data)
    try:
        download, records = await _recorded_download(backend, ("f.bin",))
        offset = 0
        for _ in range(8):
            offset += len(await download.read(offset, 32768))
        victim.kill()  # reads ahead are in flight now
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            while offset < len(data):
                chunk = await download.read(offset, 32768)
                assert chunk == data[offset : offset + len(chunk)]
                offset += len(chunk)
        assert info.value.fault is Fault.UNAVAILABLE
        await download.close(info.value.detail)
        assert time.monotonic() - started < 10
        assert [(r.outcome, r.sha256) for r in records] == [(Outcome.FAILED, None)]
    finally:
        await backend.close()
        victim.stop()


async def test_file_cut_on_the_device_mid_download(devices: Devices, tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = device_config(devices.sftp, devices.identity, root, protocol="sftp")
    backend = open_device("cut", config, tmp_path / "state")
    data = os.urandom(30 * BLOCK)
    (root / "f.bin").write_bytes(data)
    try:
        download, records = await _recorded_download(backend, ("f.bin",))
        served = await download.read(0, 32768)
        os.truncate(root / "f.bin", 12 * BLOCK + 5)  # past what is read ahead by now
        while chunk := await download.read(len(served), 32768):
            served += chunk
        await download.close()
        # Every byte served is the file's; the end came early and nothing vouches
        # for the whole file.
        assert served == data[: len(served)]
        assert 12 * BLOCK + 5 <= len(served) < len(data)
        assert [(r.outcome, r.sha256, r.error) for r in records] == [
            (Outcome.SUCCESS, None, "partial read")
        ]
    finally:
        await backend.close()


async def test_read_back_runs_beside_the_upload(
    devices: Devices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    config = device_config(devices.sftp, devices.identity, root, protocol="sftp")
    backend = open_device("beside", config, tmp_path / "state")
    read_back: list[tuple[int, int | None]] = []
    original = relay_sftp.read_exactly

    async def counted(file: Any, offset: int, length: int, end: int | None) -> bytes:
        read_back.append((offset, end))
        return await original(file, offset, length, end)

    monkeypatch.setattr(relay_sftp, "read_exactly", counted)
    data = os.urandom(20 * BLOCK + 3)
    try:
        handle = await backend.open_write(("fw.bin",))
        for offset in range(0, 16 * BLOCK, 65536):
            await handle.write(offset, data[offset : min(offset + 65536, 16 * BLOCK)])
        async with asyncio.timeout(30):  # a hang guard, not a timing
            while not read_back:
                await asyncio.sleep(0.01)
        # Read back before the commit: only whole blocks the device has answered,
        # with no end known yet.
        assert all(end is None and offset + BLOCK <= 16 * BLOCK for offset, end in read_back)
        for offset in range(16 * BLOCK, len(data), 65536):
            await handle.write(offset, data[offset : offset + 65536])
        await handle.commit()
        assert handle.custody is not None and handle.custody.method == "read-back"
        assert handle.device_sha256 == sha(data) == sha((root / "fw.bin").read_bytes())
        assert read_back[-1][1] == len(data)  # the tail: read once the end was known
    finally:
        await backend.close()


@pytest.mark.parametrize("size", [0, 5, 3 * BLOCK])
async def test_read_back_of_writes_out_of_order(
    devices: Devices, tmp_path: Path, size: int
) -> None:
    """Writes not front to back (a raw SFTP client's) get their read-back at the end."""
    root = tmp_path / "root"
    config = device_config(devices.sftp, devices.identity, root, protocol="sftp")
    backend = open_device("ooo", config, tmp_path / "state")
    data = os.urandom(size)
    half = size // 2
    try:
        handle = await backend.open_write(("fw.bin",))
        if size:
            await handle.write(half, data[half:])
            await handle.write(0, data[:half])
        await handle.commit()
        assert handle.device_sha256 == sha(data) == sha((root / "fw.bin").read_bytes())
    finally:
        await backend.close()


@pytest.mark.parametrize("stop", ["abort", "cancel-commit"])
async def test_upload_given_up_during_read_back(
    devices: Devices, tmp_path: Path, stop: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An upload aborted (or its commit cancelled) while its read-back runs leaves no
    file, no temp file, no task and no slot behind: the next upload gets every slot."""
    root = tmp_path / "root"
    config = device_config(devices.sftp, devices.identity, root, protocol="sftp", max_concurrency=2)
    backend = open_device("stop", config, tmp_path / "state")
    data = os.urandom(12 * BLOCK)
    try:
        handle = await backend.open_write(("fw.bin",))
        for offset in range(0, len(data), 65536):
            await handle.write(offset, data[offset : offset + 65536])
        if stop == "cancel-commit":
            commit = asyncio.ensure_future(handle.commit())
            await asyncio.sleep(0)
            commit.cancel()
            with pytest.raises(asyncio.CancelledError):
                await commit
        await handle.abort()
        assert list(root.iterdir()) == []
        assert backend.link._slots._value == 2  # every slot given back
        async with asyncio.timeout(30):  # a hang guard: a lost slot would stall here
            again = await backend.open_write(("fw.bin",))
            await again.write(0, data)
            await again.commit()
        assert again.device_sha256 == sha(data)
        assert "never retrieved" not in caplog.text
    finally:
        await backend.close()
