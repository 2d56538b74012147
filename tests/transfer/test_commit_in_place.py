"""A commit that fails or is cancelled after its rename, in the folder's flush.

The final name already shows the whole file (its data was flushed before the
rename), so storage says the upload happened: the record must say so too,
with a note, while the client hears the error (it was promised a durable
name). Before, such an upload was recorded ``failed`` with the file in place:
journal and storage disagreed.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from conduit.errors import StorageError
from conduit.storage import LocalBackend, localfiles
from conduit.transfer import Outcome, Upload
from tests.transfer.reports import Reports

_fsync = os.fsync
DATA = os.urandom(5000)


class FolderFsync:
    """``os.fsync``: a file's passes; a folder's waits for ``go``, then fails
    with ``fail`` (an errno) or flushes."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.fail: int | None = None

    def __call__(self, fd: int) -> None:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            return _fsync(fd)
        self.entered.set()
        assert self.go.wait(10), "the test never let the folder's flush finish"
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        return _fsync(fd)


@pytest.fixture
def fs(monkeypatch: pytest.MonkeyPatch) -> FolderFsync:
    fsync = FolderFsync()
    monkeypatch.setattr(localfiles.os, "fsync", fsync)
    return fsync


async def _upload(tmp_path: Path, reports: Reports) -> tuple[Upload, int]:
    (tmp_path / "inbox").mkdir()
    backend = LocalBackend("inbox", tmp_path / "inbox", durable=True)
    await backend.stat(())  # the backend's own descriptors, opened before the count
    before = len(os.listdir("/proc/self/fd"))
    handle = await backend.open_write(("f.bin",))

    async def intend(sha256: str, size: int, times: tuple[float, float] | None) -> None:
        pass

    up = Upload(handle, transfer="t1", path="/inbox/f.bin", report=reports, intend=intend)
    await up.write(0, DATA)
    return up, before


def _in_place_and_recorded(tmp_path: Path, reports: Reports, note: str) -> None:
    assert os.listdir(tmp_path / "inbox") == ["f.bin"]  # no temp name left
    assert (tmp_path / "inbox" / "f.bin").read_bytes() == DATA
    (record,) = reports.records
    assert record.outcome is Outcome.SUCCESS
    assert record.sha256 == hashlib.sha256(DATA).hexdigest()
    assert record.error is not None and note in record.error


async def test_a_failed_folder_flush_after_the_rename_is_recorded_as_done(
    tmp_path: Path, fs: FolderFsync
) -> None:
    reports = Reports()
    up, before = await _upload(tmp_path, reports)
    fs.fail, _ = errno.EIO, fs.go.set()
    with pytest.raises(StorageError):  # the client hears it: the name may not be durable
        await up.commit()
    _in_place_and_recorded(tmp_path, reports, "in place, but")
    assert len(os.listdir("/proc/self/fd")) == before
    await up.abort("client gone")  # the session's clean-up changes nothing
    assert len(reports.records) == 1


async def test_a_commit_cancelled_in_the_folder_flush_is_recorded_as_done(
    tmp_path: Path, fs: FolderFsync
) -> None:
    reports = Reports()
    up, before = await _upload(tmp_path, reports)
    commit = asyncio.create_task(up.commit())
    for _ in range(600):
        if fs.entered.is_set():
            break
        await asyncio.sleep(0.005)
    assert fs.entered.is_set()
    commit.cancel()
    await asyncio.sleep(0.02)
    assert not commit.done()  # the flush in flight holds the folder's descriptor open
    fs.go.set()
    with pytest.raises(asyncio.CancelledError):
        await commit
    _in_place_and_recorded(tmp_path, reports, "folder's flush was interrupted")
    await up.abort("gateway stopped during transfer")
    assert len(reports.records) == 1
    assert len(os.listdir("/proc/self/fd")) == before
