"""A durable upload's data flush overlaps its commit intent; the rename waits for both.

Only the intent must be durable before the rename (the write-ahead rule): the
file's fsync starts as the intent is recorded. Here ``os.fsync`` of the
upload's data is held on a gate the test opens (folder flushes pass), and
the ``intend`` callback stands in for the journal: it sees the data flush
already running, refuses, or never returns. In every case nothing appears
under the final name unless both flushes returned, no temp file is left,
and the descriptor is never closed under a running fsync.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from conduit.errors import Fault, StorageError
from conduit.storage import LocalBackend, localfiles
from conduit.transfer import Outcome, Upload
from tests.transfer.reports import Reports

_fsync = os.fsync
DATA = b"d" * 5000


class Fsyncs:
    """``os.fsync``: a folder's passes; a file's waits for ``go``, then fails
    with ``fail`` (an errno) or flushes. Notes whether its descriptor was
    closed (or its number reused) while it ran."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.returned = threading.Event()
        self.fail: int | None = None
        self.files = 0
        self.folders = 0
        self.closed_under_it = False

    def __call__(self, fd: int) -> None:
        before = os.fstat(fd)
        if stat.S_ISDIR(before.st_mode):
            self.folders += 1
            return _fsync(fd)
        self.entered.set()
        try:
            assert self.go.wait(10), "the test never let the flush finish"
            try:
                after = os.fstat(fd)
            except OSError:
                self.closed_under_it = True
            else:
                self.closed_under_it |= (after.st_dev, after.st_ino) != (
                    before.st_dev,
                    before.st_ino,
                )
            self.files += 1
            if self.fail is not None:
                raise OSError(self.fail, os.strerror(self.fail))
            return _fsync(fd)
        finally:
            self.returned.set()


@pytest.fixture
def fs(monkeypatch: pytest.MonkeyPatch) -> Fsyncs:
    fsyncs = Fsyncs()
    monkeypatch.setattr(localfiles.os, "fsync", fsyncs)
    return fsyncs


async def until(event: threading.Event, seconds: float = 3.0) -> bool:
    """Whether ``event`` is set within ``seconds`` (polled: the loop stays free)."""
    for _ in range(int(seconds / 0.005)):
        if event.is_set():
            return True
        await asyncio.sleep(0.005)
    return event.is_set()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _left(inbox: Path) -> list[str]:
    return sorted(os.listdir(inbox))


_baseline: list[int] = []  # descriptors open before each upload's handle


async def _upload(tmp_path: Path, reports: Reports, intend: object, durable: bool = True) -> Upload:
    backend = LocalBackend("inbox", tmp_path / "inbox", durable=durable)
    await backend.stat(())  # the backend's own descriptors, opened before the count
    _baseline.append(_open_fds())
    handle = await backend.open_write(("f.bin",))
    up = Upload(handle, transfer="t1", path="/inbox/f.bin", report=reports, intend=intend)  # type: ignore[arg-type]
    await up.write(0, DATA)
    return up


async def test_the_data_flush_runs_while_the_intent_is_recorded_and_the_rename_waits(
    tmp_path: Path, fs: Fsyncs
) -> None:
    inbox = tmp_path / "inbox"
    seen: list[tuple[bool, bool]] = []

    async def intend(sha256: str, size: int, times: tuple[float, float] | None) -> None:
        running = await until(fs.entered)  # started before the intent was recorded
        fs.go.set()
        assert await until(fs.returned)
        for _ in range(10):  # a rename that did not wait for the intent would run now
            await asyncio.sleep(0.002)
        seen.append((running, (inbox / "f.bin").exists()))

    reports = Reports()
    up = await _upload(tmp_path, reports, intend)
    await up.commit()
    assert seen == [(True, False)]
    assert (inbox / "f.bin").read_bytes() == DATA
    assert (fs.files, fs.folders) == (1, 1)  # the data once, then the folder
    assert not fs.closed_under_it
    assert [r.outcome for r in reports.records] == [Outcome.SUCCESS]


async def test_an_intent_refused_while_the_data_flush_runs_leaves_nothing(
    tmp_path: Path, fs: Fsyncs
) -> None:
    inbox = tmp_path / "inbox"

    async def intend(sha256: str, size: int, times: tuple[float, float] | None) -> None:
        assert await until(fs.entered)
        asyncio.get_running_loop().call_later(0.05, fs.go.set)  # still flushing as we refuse
        raise StorageError(Fault.FAILURE, "audit journal unavailable")

    reports = Reports()
    up = await _upload(tmp_path, reports, intend)
    with pytest.raises(StorageError, match="audit journal unavailable"):
        await up.commit()
    assert fs.returned.is_set()  # the abort waited for the flush before closing
    assert not fs.closed_under_it
    assert _left(inbox) == []  # nothing final, no temp file
    assert _open_fds() == _baseline[-1]
    assert [r.outcome for r in reports.records] == [Outcome.FAILED]


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
async def test_a_data_flush_failing_after_the_durable_intent_fails_the_upload(
    tmp_path: Path, fs: Fsyncs, err: int
) -> None:
    inbox = tmp_path / "inbox"
    intents: list[str] = []
    fs.fail = err

    async def intend(sha256: str, size: int, times: tuple[float, float] | None) -> None:
        assert await until(fs.entered)
        fs.go.set()
        assert await until(fs.returned)  # it failed before the intent is "durable"
        intents.append(sha256)

    reports = Reports()
    up = await _upload(tmp_path, reports, intend)
    with pytest.raises(StorageError) as caught:
        await up.commit()
    assert errno.errorcode[err] in caught.value.detail
    assert len(intents) == 1  # the intent was recorded: its outcome must be "failed"
    assert _left(inbox) == []
    assert _open_fds() == _baseline[-1]
    assert fs.folders == 0  # no rename, so no folder flush
    (record,) = reports.records
    assert record.outcome is Outcome.FAILED and errno.errorcode[err] in (record.error or "")


async def test_a_commit_cancelled_mid_intent_closes_nothing_under_the_flush(
    tmp_path: Path, fs: Fsyncs
) -> None:
    """The client goes away while its intent and data flush are both in flight;
    the session's abort (cancelled too, once) waits for the flush."""
    inbox = tmp_path / "inbox"

    async def intend(sha256: str, size: int, times: tuple[float, float] | None) -> None:
        await asyncio.Event().wait()  # a journal that never answers

    reports = Reports()
    up = await _upload(tmp_path, reports, intend)
    commit = asyncio.create_task(up.commit())
    assert await until(fs.entered)
    commit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await commit
    assert not fs.returned.is_set()
    abort = asyncio.create_task(up.abort("session ended"))
    await asyncio.sleep(0.05)
    assert not abort.done()  # waiting for the flush, descriptor open
    abort.cancel()
    await asyncio.sleep(0.05)
    assert not abort.done()  # still waiting: a cancelled abort closes nothing early
    fs.go.set()
    with pytest.raises(asyncio.CancelledError):
        await abort
    assert not fs.closed_under_it
    assert _left(inbox) == []
    assert _open_fds() == _baseline[-1]
    assert [r.outcome for r in reports.records] == [Outcome.FAILED]


async def test_a_non_durable_upload_flushes_nothing(tmp_path: Path, fs: Fsyncs) -> None:
    intents: list[int] = []

    async def intend(sha256: str, size: int, times: tuple[float, float] | None) -> None:
        intents.append(size)

    up = await _upload(tmp_path, Reports(), intend, durable=False)
    await up.commit()
    assert intents == [len(DATA)]
    assert (fs.files, fs.folders) == (0, 0)
    assert (tmp_path / "inbox" / "f.bin").read_bytes() == DATA


async def test_without_an_intent_the_commit_flushes_as_before(tmp_path: Path, fs: Fsyncs) -> None:
    """No write-ahead (no journal): the commit starts the data flush itself."""
    fs.go.set()
    up = await _upload(tmp_path, Reports(), None)
    await up.commit()
    assert (fs.files, fs.folders) == (1, 1)
    assert (tmp_path / "inbox" / "f.bin").read_bytes() == DATA


async def test_a_commit_cancelled_twice_mid_flush_then_aborted_closes_nothing_under_it(
    tmp_path: Path, fs: Fsyncs
) -> None:
    """No intent (the commit starts its own flush): a second cancellation ends
    the commit's wait for the flush, and the abort that follows still waits."""
    inbox = tmp_path / "inbox"
    reports = Reports()
    up = await _upload(tmp_path, reports, None)
    commit = asyncio.create_task(up.commit())
    assert await until(fs.entered)
    commit.cancel()
    await asyncio.sleep(0.02)
    commit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await commit
    abort = asyncio.create_task(up.abort("session ended"))
    await asyncio.sleep(0.05)
    assert not abort.done()  # the flush still runs: the descriptor stays open
    fs.go.set()
    await abort
    assert not fs.closed_under_it
    assert _left(inbox) == []
    assert _open_fds() == _baseline[-1]
    assert [r.outcome for r in reports.records] == [Outcome.FAILED]
