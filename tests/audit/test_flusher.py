"""Durable records through the journal's flusher thread (a disk too slow to flush on the loop).

``INLINE_SYNC_MAX = 0`` makes every durable append go to the flusher thread,
as on a disk whose flushes take over a millisecond. The journal writes through
``conduit.audit.faults.fs``, swapped here for layers that fail or stall a
chosen call. After each case the journal verifies and its seqs are consecutive.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.audit import AuditUnavailable, auditor, faults, flushplace, verify
from conduit.audit.journal import journal_files
from tests.audit.test_journal import break_folder, mend_folder, pub, records

LIMIT = 20.0  # no case may hang: every wait below is bounded


@pytest.fixture(autouse=True)
def in_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flushplace, "INLINE_SYNC_MAX", 0.0)


class Layer(faults.FileOps):
    """Counts flushes; fails or stalls the flush of a chosen number, or every write."""

    def __init__(self) -> None:
        self.flushes = 0
        self.fail_flush: int | None = None  # the n-th fdatasync raises EIO
        self.stall = threading.Event()  # the failing flush waits for this first
        self.stall.set()
        self.write_errno: int | None = None
        self.kill: BaseException | None = None  # raised (once) by the next flush

    def write(self, fd: int, data: memoryview) -> int:
        if self.write_errno is not None:
            raise OSError(self.write_errno, os.strerror(self.write_errno))
        return super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        self.flushes += 1
        if self.kill is not None:
            exc, self.kill = self.kill, None
            raise exc
        if self.flushes == self.fail_flush:
            self.stall.wait(LIMIT)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fdatasync(fd)


@pytest.fixture
def layer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Layer]:
    fs = Layer()
    monkeypatch.setattr(faults, "fs", fs)
    yield fs


def consistent(tmp_path: Path) -> list[dict]:
    report = verify(tmp_path / "audit", pub(tmp_path))
    assert report.ok, report.broken
    recs = records(tmp_path / "audit")
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    return recs


async def wait_available(a: auditor.Auditor) -> None:
    async with asyncio.timeout(LIMIT):
        while not a.available:
            await asyncio.sleep(0.05)


async def test_a_flush_failing_stops_the_line_until_the_alert(make_auditor, tmp_path, layer):
    """Records queued at the thread behind a failed flush are not written before
    the "writable again" alert, though the disk would take them again at once."""
    a = await make_auditor(fsync="always", on_failure="closed")
    await a.record("gateway.start", "success")
    layer.fail_flush = layer.flushes + 1
    layer.stall.clear()
    first = asyncio.create_task(a.record("file.upload", "success", path="/f/failing"))
    await asyncio.sleep(0.05)  # the thread holds the failing flush now
    behind = [
        asyncio.create_task(a.record("file.upload", "success", path=f"/f/{i}")) for i in range(20)
    ]
    await asyncio.sleep(0.05)
    layer.stall.set()
    async with asyncio.timeout(LIMIT):
        with pytest.raises(AuditUnavailable, match="Input/output error"):
            await first
        results = await asyncio.gather(*behind, return_exceptions=True)
    await wait_available(a)
    await a.close()
    recs = consistent(tmp_path)
    paths = [r.get("path") for r in recs]
    assert "/f/failing" not in paths  # rolled back: no partial line, no record
    start = [r["type"] for r in recs].index("gateway.start")
    after = [r for r in recs[start + 1 :] if r["type"] != "audit.checkpoint"]
    assert after[0]["type"] == "audit.alert" and "writable again" in after[0]["reason"]
    refused = [r for r in results if isinstance(r, AuditUnavailable)]
    assert f"{1 + len(refused)} event(s) were refused" in after[0]["reason"]
    for i, result in enumerate(results):  # every waiter heard; a seq means it is there
        if isinstance(result, int):
            assert recs[result - 1]["path"] == f"/f/{i}"
        else:
            assert isinstance(result, AuditUnavailable) and f"/f/{i}" not in paths


async def test_disk_full_on_write_refuses_then_recovers(make_auditor, tmp_path, layer):
    a = await make_auditor(fsync="always", on_failure="closed")
    layer.write_errno = errno.ENOSPC
    async with asyncio.timeout(LIMIT):
        with pytest.raises(AuditUnavailable, match="No space left"):
            await a.record("file.upload", "intent", transfer="t1", path="/f/full")
        assert not a.available
        with pytest.raises(AuditUnavailable):
            await a.record("session.start", "success", principal="alice")
    layer.write_errno = None
    await wait_available(a)
    seq = await a.record("file.upload", "intent", transfer="t2", path="/f/after")
    await a.close()
    recs = consistent(tmp_path)
    assert "/f/full" not in [r.get("path") for r in recs]
    assert recs[seq - 1]["path"] == "/f/after"
    assert "2 event(s) were refused" in recs[seq - 2]["reason"]


async def test_alert_mode_holds_what_the_thread_could_not_write(make_auditor, tmp_path, layer):
    a = await make_auditor(fsync="always", on_failure="alert")
    layer.write_errno = errno.EIO
    async with asyncio.timeout(LIMIT):
        assert await a.record("file.upload", "success", path="/f/held") == 0
    layer.write_errno = None
    await asyncio.sleep(1.0)  # two probes
    await a.close()
    recs = consistent(tmp_path)
    types = [r["type"] for r in recs[1:]]
    assert types[:2] == ["audit.alert", "file.upload"] and recs[2]["path"] == "/f/held"


async def test_journal_folder_moved_away_refuses_then_recovers(make_auditor, tmp_path, layer):
    directory = tmp_path / "audit"
    a = await make_auditor(fsync="always", on_failure="closed")
    await a.record("gateway.start", "success")
    aside = break_folder(directory)
    async with asyncio.timeout(LIMIT):
        with pytest.raises(AuditUnavailable, match="cannot be written"):
            await a.record("session.start", "success", principal="alice")
    assert not (aside / "x").exists() and not a.available
    mend_folder(directory, aside)
    await wait_available(a)
    assert await a.record("session.start", "success", principal="alice") > 0
    await a.close()
    consistent(tmp_path)


async def test_many_concurrent_records_share_flushes_in_order(make_auditor, tmp_path, layer):
    a = await make_auditor(fsync="always")
    before = layer.flushes
    async with asyncio.timeout(LIMIT):
        seqs = await asyncio.gather(
            *[a.record("file.upload", "success", path=f"/f/{i}") for i in range(300)]
        )
    flushes = layer.flushes - before
    assert 1 <= flushes < 100  # group commit: far fewer flushes than records
    await a.close()
    recs = consistent(tmp_path)
    for i, seq in enumerate(seqs):  # each waiter got its own record's seq
        assert recs[seq - 1]["path"] == f"/f/{i}"
    assert seqs == sorted(seqs)  # one task after another: queued, written in that order


async def test_each_durable_record_is_flushed_before_it_returns(make_auditor, tmp_path, layer):
    sizes: list[int] = []
    real = layer.fdatasync

    def noting(fd: int) -> None:
        real(fd)
        sizes.append(os.fstat(fd).st_size)

    layer.fdatasync = noting  # type: ignore[method-assign]
    a = await make_auditor(fsync="always")
    active = journal_files(tmp_path / "audit")[-1]
    for i in range(20):
        await a.record("file.download", "started", transfer=f"t{i}", path=f"/f/{i}")
        assert threading.current_thread() is threading.main_thread()
        assert sizes and sizes[-1] == active.stat().st_size  # on disk up to this record
        await a.record("file.download", "success", transfer=f"t{i}", durable=False)
    await a.close()
    consistent(tmp_path)


async def test_close_with_waiters_pending_releases_every_one(make_auditor, tmp_path, layer):
    real = faults.FileOps.fdatasync

    def slow(self: Layer, fd: int) -> None:
        self.flushes += 1
        threading.Event().wait(0.02)
        real(self, fd)

    layer.fdatasync = slow.__get__(layer)  # type: ignore[method-assign]
    a = await make_auditor(fsync="always")
    tasks = [
        asyncio.create_task(a.record("file.upload", "success", path=f"/f/{i}")) for i in range(50)
    ]
    await asyncio.sleep(0)  # they are all at the thread or queued
    async with asyncio.timeout(LIMIT):
        await a.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    recs = consistent(tmp_path)
    assert recs[-1]["type"] == "audit.checkpoint" and recs[-1]["reason"] == "close"
    for i, result in enumerate(results):
        if isinstance(result, int):
            assert recs[result - 1]["path"] == f"/f/{i}"
        else:
            assert isinstance(result, AuditUnavailable)
    assert any(isinstance(r, int) for r in results)


class Killed(BaseException):
    """Not an Exception: ends the flusher thread as a bug in it would."""


async def test_flusher_thread_dying_fails_closed_and_comes_back(make_auditor, tmp_path, layer):
    a = await make_auditor(fsync="always", on_failure="closed")
    await a.record("gateway.start", "success")
    layer.kill = Killed()
    async with asyncio.timeout(LIMIT):
        with pytest.raises(AuditUnavailable, match="flusher thread ended"):
            await a.record("file.upload", "intent", transfer="t1", path="/f/lost")
    assert not a.available
    await wait_available(a)  # the committer's probe started a new thread
    seq = await a.record("file.upload", "intent", transfer="t2", path="/f/next")
    await a.close()
    recs = consistent(tmp_path)
    assert recs[seq - 1]["path"] == "/f/next"
    assert any("writable again" in r.get("reason", "") for r in recs)


# -- kill -9 between the write and its flush ------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys, threading
    from pathlib import Path
    from conduit.audit import Auditor, faults, flushplace
    from conduit.config.model import AuditConfig

    class Stall(faults.FileOps):
        armed = False
        def fdatasync(self, fd):
            if self.armed:
                print("between", flush=True)  # written, not flushed
                threading.Event().wait()
            super().fdatasync(fd)

    async def main():
        flushplace.INLINE_SYNC_MAX = 0.0
        faults.fs = stall = Stall()
        base = Path(sys.argv[1])
        a = await Auditor.open(AuditConfig(journal=base / "audit"), node="gw", key_dir=base)
        await a.record("file.upload", "started", transfer="t-1", path="/fw/a.bin", durable=False)
        stall.armed = True
        await a.record("file.download", "started", transfer="t-2", path="/fw/b.bin")

    asyncio.run(main())
    """
)


async def test_kill_between_write_and_flush_then_recovery(make_auditor, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"between"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(LIMIT)
    assert verify(tmp_path / "audit", pub(tmp_path)).ok
    a = await make_auditor()
    await a.close()
    recs = consistent(tmp_path)
    for transfer in ("t-1", "t-2"):  # both left open by the kill: settled as failed
        ends = [r for r in recs if r.get("transfer") == transfer]
        assert [r["outcome"] for r in ends] == ["started", "failed"]
        assert ends[1]["error"] == "gateway stopped during transfer"
