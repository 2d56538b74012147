"""A download read and hashed ahead in a worker thread, over real files.

Hostile cases: the file shrinks, grows or changes under the download; the
reader is cancelled with a read in flight; many downloads at once must stay
within the shared bound. The hash, when one is reported, is always that of
exactly the bytes handed out.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from conduit.storage.local import LocalBackend
from conduit.transfer import Download, Outcome, readahead
from conduit.transfer.budget import ReorderBudget
from tests.transfer.reports import Reports

BLOCK = 256 * 1024


@pytest.fixture(autouse=True)
def own_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared bound of this test's own: an in-process gateway of an earlier
    test, stopped with a job in flight, may leave bytes held in the process's."""
    monkeypatch.setattr(readahead, "_shared", ReorderBudget(readahead.SHARED_BYTES))


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    (tmp_path / "out").mkdir()
    return LocalBackend("out", tmp_path / "out")


async def opened(backend: LocalBackend, name: str, reports: Reports) -> Download:
    handle = await backend.open_read((name,))
    return Download(handle, transfer="t", path=f"/out/{name}", report=reports)


async def drain(down: Download, start: int = 0, block: int = BLOCK) -> bytes:
    got: list[bytes] = []
    offset = start
    while True:
        data = await down.read(offset, block)
        if not data:
            return b"".join(got)
        got.append(data)
        offset += len(data)


async def settled(down: Download) -> None:
    """Until the read-ahead has nothing in flight (it filled its depth or its bound)."""
    reading = down._reading
    for _ in range(2000):
        if reading is None or reading._job is None:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("read-ahead never settled")


async def test_whole_file_hash_is_of_the_bytes_sent(backend: LocalBackend, tmp_path: Path) -> None:
    data = os.urandom(3 * BLOCK + 12345)
    (tmp_path / "out" / "f.bin").write_bytes(data)
    reports = Reports()
    down = await opened(backend, "f.bin", reports)
    # an odd read size: blocks are sliced and joined, the hash does not care
    sent = await drain(down, block=100_000)
    await down.close()
    assert sent == data
    assert reports.records[0].sha256 == hashlib.sha256(data).hexdigest()
    assert reports.records[0].bytes == len(data)
    assert readahead.shared_budget().held == 0


async def test_file_grown_during_download_stops_at_its_opened_size(
    backend: LocalBackend, tmp_path: Path
) -> None:
    data = os.urandom(2 * BLOCK)
    path = tmp_path / "out" / "log.txt"
    path.write_bytes(data)
    reports = Reports()
    down = await opened(backend, "log.txt", reports)
    first = await down.read(0, BLOCK)
    with path.open("ab") as f:
        f.write(b"appended meanwhile" * 1000)
    rest = await drain(down, start=BLOCK)
    # a client reading on past the end (SFTP read-ahead) gets nothing more
    assert await down.read(len(data) + 5000, BLOCK) == b""
    await down.close()
    assert first + rest == data
    assert reports.records[0].sha256 == hashlib.sha256(data).hexdigest()


async def test_file_truncated_during_download_gets_no_hash(
    backend: LocalBackend, tmp_path: Path
) -> None:
    path = tmp_path / "out" / "f.bin"
    path.write_bytes(os.urandom(64 * BLOCK))
    reports = Reports()
    down = await opened(backend, "f.bin", reports)
    first = await down.read(0, BLOCK)
    os.truncate(path, BLOCK + 1000)
    rest = await drain(down, start=BLOCK)
    await down.close()
    # what was read ahead before the truncation may still go out, never more than the file had
    assert len(first + rest) < 64 * BLOCK
    record = reports.records[0]
    assert record.sha256 is None and record.outcome is Outcome.SUCCESS
    assert record.error == "partial read"


async def test_file_changed_in_place_hash_matches_what_was_sent(
    backend: LocalBackend, tmp_path: Path
) -> None:
    path = tmp_path / "out" / "f.bin"
    size = 32 * BLOCK
    path.write_bytes(b"a" * size)
    reports = Reports()
    down = await opened(backend, "f.bin", reports)
    got = [await down.read(0, BLOCK)]
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"b" * (size // 2), size // 2)  # the second half changes under the read
    finally:
        os.close(fd)
    got.append(await drain(down, start=BLOCK))
    await down.close()
    sent = b"".join(got)
    assert len(sent) == size and sent.endswith(b"b")
    assert reports.records[0].sha256 == hashlib.sha256(sent).hexdigest()


async def test_random_access_after_read_ahead_reports_no_hash(
    backend: LocalBackend, tmp_path: Path
) -> None:
    data = os.urandom(8 * BLOCK)
    (tmp_path / "out" / "f.bin").write_bytes(data)
    reports = Reports()
    down = await opened(backend, "f.bin", reports)
    assert await down.read(0, BLOCK) == data[:BLOCK]
    assert await down.read(5 * BLOCK, BLOCK) == data[5 * BLOCK : 6 * BLOCK]  # a skip
    await down.close()
    assert reports.records[0].sha256 is None
    assert readahead.shared_budget().held == 0


async def test_cancelled_reader_leaves_no_thread_on_a_closed_descriptor(
    backend: LocalBackend, tmp_path: Path
) -> None:
    (tmp_path / "out" / "f.bin").write_bytes(os.urandom(16 * BLOCK))
    reports = Reports()
    down = await opened(backend, "f.bin", reports)
    fd = down.handle.fd  # type: ignore[attr-defined]
    gate = asyncio.Event()
    calls: list[int] = []
    real = down._pread
    assert real is not None

    stall = readahead.BATCH * BLOCK  # the first block of the second job

    def slow(offset: int, length: int) -> bytes:
        calls.append(offset)
        if offset == stall:
            # stays in flight until the test lets it go
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(10)
        return real(offset, length)

    loop = asyncio.get_running_loop()
    down._pread = slow
    for offset in range(0, stall, BLOCK):  # what the first job read
        assert len(await down.read(offset, BLOCK)) == BLOCK
    reader = asyncio.ensure_future(down.read(stall, BLOCK))
    await asyncio.sleep(0.05)
    assert stall in calls and not reader.done()  # waiting on the job in flight
    reader.cancel()  # the client is gone
    with pytest.raises(asyncio.CancelledError):
        await reader
    closing = asyncio.ensure_future(down.close("transfer interrupted"))
    await asyncio.sleep(0.05)
    closing.cancel()  # even a cancelled close waits for the read in flight
    await asyncio.sleep(0.05)
    assert not closing.done()
    os.fstat(fd)  # still open: the thread is still reading it
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await closing
    with pytest.raises(OSError):
        os.fstat(fd)
    assert reports.records[0].outcome is Outcome.FAILED and reports.records[0].sha256 is None
    assert readahead.shared_budget().held == 0


async def test_many_downloads_stay_within_the_shared_bound(
    backend: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 3 * readahead.MAX_BLOCK
    monkeypatch.setattr(readahead, "_shared", ReorderBudget(bound))
    data = os.urandom(8 * readahead.MAX_BLOCK)
    (tmp_path / "out" / "f.bin").write_bytes(data)
    reports = Reports()
    downs = [await opened(backend, "f.bin", reports) for _ in range(12)]
    for down in downs:
        assert await down.read(0, readahead.MAX_BLOCK) == data[: readahead.MAX_BLOCK]
    for down in downs:
        await settled(down)
    held = [down._reading.held for down in downs if down._reading is not None]
    assert readahead.shared_budget().held == sum(held) <= bound
    assert max(held) <= (readahead.DEPTH - 1) * readahead.MAX_BLOCK
    # the bound slows the read-ahead, never the downloads: each still completes
    for down in downs:
        assert (
            await drain(down, start=readahead.MAX_BLOCK, block=readahead.MAX_BLOCK)
            == data[readahead.MAX_BLOCK :]
        )
        await down.close()
    assert {r.sha256 for r in reports.records} == {hashlib.sha256(data).hexdigest()}
    assert readahead.shared_budget().held == 0
