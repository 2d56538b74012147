"""An upload written and hashed behind, in a worker thread, over real files.

Hostile cases: a write fails in the thread (the disk is full), the upload is
aborted with a write in flight, many uploads at once against a small shared
bound. Nothing partial ever appears under the final name, and the hash
committed is that of exactly the bytes on disk.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from conduit.errors import StorageError
from conduit.storage.local import LocalBackend
from conduit.storage.localfiles import fault_of
from conduit.transfer import Outcome, Upload, writebehind
from conduit.transfer.budget import ReorderBudget
from tests.transfer.reports import Reports

PIECE = 200_000


@pytest.fixture(autouse=True)
def own_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared bound of this test's own: an in-process gateway of an earlier
    test, stopped with a job in flight, may leave bytes held in the process's."""
    monkeypatch.setattr(writebehind, "_shared", ReorderBudget(writebehind.SHARED_BYTES))


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend("inbox", tmp_path / "inbox")


async def upload(backend: LocalBackend, reports: Reports, name: str = "f.bin") -> Upload:
    handle = await backend.open_write((name,))
    up = Upload(handle, transfer="t", path=f"/inbox/{name}", report=reports)
    assert up._behind is not None  # local files are written behind
    return up


async def test_written_behind_lands_byte_exact_with_its_hash(
    backend: LocalBackend, tmp_path: Path
) -> None:
    reports = Reports()
    data = os.urandom(40 * PIECE + 7)
    up = await upload(backend, reports)
    for offset in range(0, len(data), PIECE):
        await up.write(offset, data[offset : offset + PIECE])
    # the SFTP check-file extension asks mid-upload: every queued byte counts
    assert await up.digest() == hashlib.sha256(data).digest()
    assert await up.commit() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "inbox" / "f.bin").read_bytes() == data
    assert writebehind.shared_budget().held == 0


async def test_a_write_failing_in_the_thread_fails_the_upload(
    backend: LocalBackend, tmp_path: Path
) -> None:
    reports = Reports()
    up = await upload(backend, reports)
    assert up._behind is not None
    real = up._behind._pwrite
    calls: list[int] = []

    def full(offset: int, data: bytes) -> None:
        calls.append(offset)
        if len(calls) >= 3:
            raise fault_of(OSError(errno.ENOSPC, "No space left on device"))
        real(offset, data)

    up._behind._pwrite = full
    with pytest.raises(StorageError, match="no space left"):
        for offset in range(0, 30 * PIECE, PIECE):
            await up.write(offset, os.urandom(PIECE))
        await up.commit()
    await up.abort("disk full")
    assert os.listdir(tmp_path / "inbox") == []  # neither the final name nor the temp file
    assert reports.records[0].outcome is Outcome.FAILED
    assert reports.records[0].sha256 is None
    assert writebehind.shared_budget().held == 0


async def test_abort_waits_for_the_write_in_flight(backend: LocalBackend, tmp_path: Path) -> None:
    reports = Reports()
    up = await upload(backend, reports)
    assert up._behind is not None
    fd = up.handle.fd  # type: ignore[attr-defined]
    real = up._behind._pwrite
    entered, gate = threading.Event(), threading.Event()

    def slow(offset: int, data: bytes) -> None:
        entered.set()
        assert gate.wait(10)
        real(offset, data)

    up._behind._pwrite = slow
    await up.write(0, os.urandom(PIECE))
    await up.write(PIECE, os.urandom(PIECE))  # queued behind the one in flight
    assert await asyncio.to_thread(entered.wait, 10)
    aborting = asyncio.ensure_future(up.abort("client gone"))
    await asyncio.sleep(0.05)
    aborting.cancel()  # even a cancelled abort waits for the write in flight
    await asyncio.sleep(0.05)
    assert not aborting.done()
    os.fstat(fd)  # still open under the thread's write
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await aborting
    with pytest.raises(OSError):
        os.fstat(fd)
    assert os.listdir(tmp_path / "inbox") == []
    assert reports.records[0].outcome is Outcome.FAILED
    assert writebehind.shared_budget().held == 0


async def test_many_uploads_stay_within_the_shared_bound(
    backend: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 1024 * 1024
    budget = ReorderBudget(bound)
    monkeypatch.setattr(writebehind, "_shared", budget)
    reports = Reports()
    data = os.urandom(20 * PIECE)
    ups = [await upload(backend, reports, f"f{i}.bin") for i in range(10)]
    peak = 0

    async def send(up: Upload) -> None:
        nonlocal peak
        for offset in range(0, len(data), PIECE):
            await up.write(offset, data[offset : offset + PIECE])
            peak = max(peak, budget.held)
            await asyncio.sleep(0)
        await up.commit()

    await asyncio.gather(*(send(up) for up in ups))
    assert 0 < peak <= bound
    for i in range(10):
        assert (tmp_path / "inbox" / f"f{i}.bin").read_bytes() == data
    assert {r.sha256 for r in reports.records} == {hashlib.sha256(data).hexdigest()}
    assert budget.held == 0


async def test_a_big_durable_upload_is_handed_to_the_disk_as_it_arrives(
    backend: LocalBackend, tmp_path: Path
) -> None:
    from conduit.storage.localfiles import WRITEBACK_EVERY, WriteFile

    reports = Reports()
    data = os.urandom(2 * WRITEBACK_EVERY + PIECE)
    up = await upload(backend, reports)
    handle = up.handle
    assert isinstance(handle, WriteFile) and handle.durable
    for offset in range(0, len(data), PIECE):
        await up.write(offset, data[offset : offset + PIECE])
    assert await up.digest() is not None  # every queued byte written
    # writeback was started for whole stretches, never past what was written
    assert 2 * WRITEBACK_EVERY <= handle._handed <= len(data)
    assert await up.commit() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "inbox" / "f.bin").read_bytes() == data
