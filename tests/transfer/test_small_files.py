"""Small files are read and written on the event loop, under the thread's rules.

A download with at most ``threads.INLINE_BYTES`` left, and the first
``threads.INLINE_BYTES`` of an upload, never reach the worker pool (the
hand-off cost more than the work). Hostile cases first: the file shrinks,
shrinks and grows back, grows, or changes in place between two reads; a
write fails. The hash reported is always that of exactly the bytes sent or
stored, and none is reported for a download the file cut short.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from conduit.errors import StorageError
from conduit.storage.local import LocalBackend
from conduit.storage.localfiles import fault_of
from conduit.transfer import Download, Outcome, Upload, readahead, threads, writebehind
from tests.transfer.reports import Reports

SMALL = 4096
READ = 32768  # an OpenSSH sftp client's first read


@pytest.fixture
def no_pool(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The worker pool, replaced by one that records who asked for it and refuses."""
    asked: list[str] = []

    def refuse(who: str) -> Any:
        def executor() -> Any:
            asked.append(who)
            raise AssertionError(f"{who} used a worker thread")

        return executor

    monkeypatch.setattr(readahead, "executor", refuse("read-ahead"))
    monkeypatch.setattr(writebehind, "executor", refuse("write-behind"))
    return asked


@pytest.fixture
def area(tmp_path: Path) -> Path:
    (tmp_path / "a").mkdir()
    return tmp_path / "a"


async def opened(area: Path, name: str, reports: Reports) -> Download:
    handle = await LocalBackend("a", area).open_read((name,))
    return Download(handle, transfer="t", path=f"/a/{name}", report=reports)


async def test_file_shrunk_between_two_reads_gets_no_hash(area: Path, no_pool: list[str]) -> None:
    path = area / "f.bin"
    path.write_bytes(os.urandom(SMALL))
    reports = Reports()
    down = await opened(area, "f.bin", reports)
    first = await down.read(0, 1000)
    os.truncate(path, 2000)
    rest = await down.read(1000, READ)
    assert await down.read(1000 + len(rest), READ) == b""
    await down.close()
    assert len(first) == 1000 and len(rest) == 1000
    (record,) = reports.records
    assert record.sha256 is None and record.error == "partial read"
    assert record.bytes == 2000
    assert no_pool == []


async def test_file_shrunk_then_grown_back_ends_at_the_short_read(
    area: Path, no_pool: list[str]
) -> None:
    """As in read-ahead: a short read ends the download, even if the file
    grows back to its opened size before the client asks again."""
    path = area / "f.bin"
    path.write_bytes(os.urandom(SMALL))
    reports = Reports()
    down = await opened(area, "f.bin", reports)
    assert len(await down.read(0, 1000)) == 1000
    os.truncate(path, 2000)
    assert len(await down.read(1000, READ)) == 1000  # short: 3,096 were due
    with path.open("ab") as f:
        f.write(os.urandom(SMALL - 2000))
    assert await down.read(2000, READ) == b""
    await down.close()
    assert reports.records[0].sha256 is None
    assert no_pool == []


async def test_file_grown_during_download_stops_at_its_opened_size(
    area: Path, no_pool: list[str]
) -> None:
    data = os.urandom(SMALL)
    path = area / "log.txt"
    path.write_bytes(data)
    reports = Reports()
    down = await opened(area, "log.txt", reports)
    first = await down.read(0, 1000)
    with path.open("ab") as f:
        f.write(b"appended meanwhile" * 100)
    rest = await down.read(1000, READ)
    assert await down.read(SMALL, READ) == b""
    await down.close()
    assert first + rest == data
    assert reports.records[0].sha256 == hashlib.sha256(data).hexdigest()
    assert no_pool == []


async def test_file_changed_in_place_hash_matches_what_was_sent(
    area: Path, no_pool: list[str]
) -> None:
    path = area / "f.bin"
    path.write_bytes(b"a" * SMALL)
    reports = Reports()
    down = await opened(area, "f.bin", reports)
    first = await down.read(0, SMALL // 2)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"b" * SMALL, 0)  # the whole file changes under the read
    finally:
        os.close(fd)
    rest = await down.read(SMALL // 2, READ)
    await down.close()
    sent = first + rest
    assert sent == b"a" * (SMALL // 2) + b"b" * (SMALL // 2)
    assert reports.records[0].sha256 == hashlib.sha256(sent).hexdigest()


async def test_skip_in_a_small_file_reports_no_hash(area: Path, no_pool: list[str]) -> None:
    data = os.urandom(SMALL)
    (area / "f.bin").write_bytes(data)
    reports = Reports()
    down = await opened(area, "f.bin", reports)
    assert await down.read(0, 1000) == data[:1000]
    assert await down.read(2000, READ) == data[2000:]  # a skip: no hash can vouch
    assert await down.read(1000, 1000) == data[1000:2000]
    await down.close()
    assert reports.records[0].sha256 is None


async def test_a_file_above_the_bound_is_still_read_ahead(area: Path) -> None:
    data = os.urandom(threads.INLINE_BYTES + 1)
    (area / "f.bin").write_bytes(data)
    reports = Reports()
    down = await opened(area, "f.bin", reports)
    first = await down.read(0, READ)
    assert down._reading is not None  # the thread reads it
    rest = await down.read(READ, 2 * threads.INLINE_BYTES)
    await down.close()
    assert first + rest == data
    assert reports.records[0].sha256 == hashlib.sha256(data).hexdigest()


async def upload(area: Path, reports: Reports, name: str = "f.bin") -> Upload:
    handle = await LocalBackend("a", area).open_write((name,))
    return Upload(handle, transfer="t", path=f"/a/{name}", report=reports)


async def test_small_upload_lands_without_a_thread(area: Path, no_pool: list[str]) -> None:
    data = os.urandom(SMALL)
    reports = Reports()
    up = await upload(area, reports)
    await up.write(0, data[:1000])
    await up.write(1000, data[1000:])
    assert await up.commit() == hashlib.sha256(data).hexdigest()
    assert (area / "f.bin").read_bytes() == data
    assert no_pool == []


async def test_small_upload_whose_write_fails_leaves_nothing(
    area: Path, no_pool: list[str]
) -> None:
    reports = Reports()
    up = await upload(area, reports)
    assert up._behind is not None

    def full(offset: int, data: bytes) -> None:
        raise fault_of(OSError(errno.ENOSPC, "No space left on device"))

    up._behind._pwrite = full
    with pytest.raises(StorageError, match="no space left"):
        await up.write(0, os.urandom(SMALL))
    await up.abort("disk full")
    assert os.listdir(area) == []  # neither the final name nor the temp file
    assert reports.records[0].outcome is Outcome.FAILED and reports.records[0].sha256 is None


async def test_upload_crossing_the_bound_goes_behind_in_order(
    area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first bytes on the loop, the rest in the thread: one hash, in order."""
    real, used = threads.executor, []

    def counted() -> Any:
        used.append(1)
        return real()

    monkeypatch.setattr(writebehind, "executor", counted)
    data = os.urandom(threads.INLINE_BYTES + 5000)
    reports = Reports()
    up = await upload(area, reports)
    for offset in range(0, len(data), 20_000):
        await up.write(offset, data[offset : offset + 20_000])
        if offset + 20_000 <= threads.INLINE_BYTES:
            assert used == []
    assert used  # the write past the bound went to the thread
    assert await up.commit() == hashlib.sha256(data).hexdigest()
    assert (area / "f.bin").read_bytes() == data
    assert writebehind.shared_budget().held == 0
