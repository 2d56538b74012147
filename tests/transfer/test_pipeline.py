"""The transfer pipeline over a real local backend: hashing, ordering, limits, commit/abort."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conduit.errors import StorageError
from conduit.storage.local import LocalBackend
from conduit.transfer import Download, Outcome, TransferRefused, Upload
from conduit.transfer.pipeline import MAX_REORDER_BYTES
from tests.transfer.reports import Reports


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend("inbox", tmp_path / "inbox")


async def upload(backend: LocalBackend, reports: Reports, max_size: int | None = None) -> Upload:
    handle = await backend.open_write(("f.bin",))
    return Upload(handle, transfer="t1", path="/inbox/f.bin", report=reports, max_size=max_size)


async def test_sequential_upload_hash_and_commit(backend: LocalBackend, tmp_path: Path) -> None:
    reports = Reports()
    data = os.urandom(300_000)
    up = await upload(backend, reports)
    for offset in range(0, len(data), 65536):
        await up.write(offset, data[offset : offset + 65536])
    assert not (tmp_path / "inbox" / "f.bin").exists()
    digest = await up.commit()
    assert digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "inbox" / "f.bin").read_bytes() == data
    (record,) = reports.records
    assert (record.outcome, record.bytes, record.sha256) == (Outcome.SUCCESS, len(data), digest)


async def test_out_of_order_within_window_still_hashes_in_order(backend: LocalBackend) -> None:
    reports = Reports()
    chunks = [os.urandom(1000) for _ in range(5)]
    up = await upload(backend, reports)
    for index in (1, 2, 0, 4, 3):
        await up.write(index * 1000, chunks[index])
    assert await up.commit() == hashlib.sha256(b"".join(chunks)).hexdigest()


async def test_gap_at_commit_fails_and_leaves_nothing(
    backend: LocalBackend, tmp_path: Path
) -> None:
    reports = Reports()
    up = await upload(backend, reports)
    await up.write(0, b"a" * 10)
    await up.write(20, b"c" * 10)
    with pytest.raises(StorageError, match="incomplete"):
        await up.commit()
    assert os.listdir(tmp_path / "inbox") == []
    assert reports.records[0].outcome is Outcome.FAILED


async def test_write_far_ahead_or_behind_is_refused(backend: LocalBackend) -> None:
    up = await upload(backend, Reports())
    await up.write(0, b"x" * 100)
    with pytest.raises(TransferRefused, match="front to back"):
        await up.write(0, b"y" * 10)  # rewriting what is already hashed
    up2 = await upload(backend, Reports())
    with pytest.raises(TransferRefused):
        await up2.write(MAX_REORDER_BYTES + 1, b"z")


async def test_size_limit(backend: LocalBackend, tmp_path: Path) -> None:
    reports = Reports()
    up = await upload(backend, reports, max_size=1000)
    await up.write(0, b"x" * 1000)
    with pytest.raises(TransferRefused, match="size limit"):
        await up.write(1000, b"x")
    await up.abort("size limit")
    assert os.listdir(tmp_path / "inbox") == []
    assert reports.records[0].outcome is Outcome.FAILED


async def test_download_hash_only_when_read_front_to_back(
    backend: LocalBackend, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    (tmp_path / "inbox" / "d.bin").write_bytes(data)
    reports = Reports()
    down = Download(
        await backend.open_read(("d.bin",)), transfer="t", path="/inbox/d.bin", report=reports
    )
    offset = 0
    while chunk := await down.read(offset, 16384):
        offset += len(chunk)
    await down.close()
    assert reports.records[-1].sha256 == hashlib.sha256(data).hexdigest()

    skipping = Download(
        await backend.open_read(("d.bin",)), transfer="t2", path="/inbox/d.bin", report=reports
    )
    await skipping.read(1000, 100)
    await skipping.read(0, 50_000)
    await skipping.close()
    assert reports.records[-1].sha256 is None  # a hash we cannot vouch for is not given


async def test_download_read_ahead_past_the_end_keeps_the_hash(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """SFTP clients (asyncssh, OpenSSH) keep several reads in flight; those past the end
    come back empty and skip nothing, so the whole file is still vouched for."""
    data = os.urandom(900)
    (tmp_path / "inbox" / "e.bin").write_bytes(data)
    reports = Reports()
    down = Download(
        await backend.open_read(("e.bin",)), transfer="t", path="/inbox/e.bin", report=reports
    )
    assert await down.read(0, 16384) == data
    assert await down.read(16384, 16384) == b""  # a read-ahead request beyond the end
    assert await down.read(900, 16384) == b""
    await down.close()
    assert reports.records[-1].sha256 == hashlib.sha256(data).hexdigest()
    assert reports.records[-1].outcome is Outcome.SUCCESS
