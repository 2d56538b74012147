"""A durable commit flushes in a worker thread, and a cancelled commit waits for it.

The fsyncs of an upload and its folder used to run on the event loop, so
every other session stood still for each flush. Here ``os.fsync`` is held
on a gate the test opens: while it is held the loop keeps serving (another
coroutine makes progress), and a commit cancelled mid-flush neither renames
the file nor closes the descriptor under the running fsync.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from conduit.storage import LocalBackend, localfiles
from conduit.storage.local import TEMP_PREFIX


class HeldFsync:
    """``os.fsync`` that waits for the test's go, and notes what it flushed."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.flushed: list[int] = []
        self.closed_under_it = False

    def __call__(self, fd: int) -> None:
        self.entered.set()
        assert self.go.wait(10), "the test never let the flush finish"
        try:
            os.fstat(fd)
        except OSError:
            self.closed_under_it = True
        self.flushed.append(fd)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldFsync:
    fsync = HeldFsync()
    monkeypatch.setattr(localfiles.os, "fsync", fsync)
    return fsync


async def _entered(held: HeldFsync) -> None:
    while not held.entered.is_set():
        await asyncio.sleep(0.005)


def test_the_loop_keeps_serving_while_an_upload_is_flushed(tmp_path: Path, held: HeldFsync) -> None:
    backend = LocalBackend("a", tmp_path, durable=True)

    async def scenario() -> int:
        handle = await backend.open_write(("fw.bin",))
        await handle.write(0, b"x" * 4096)
        commit = asyncio.create_task(handle.commit())
        await _entered(held)
        ticks = 0
        for _ in range(20):  # the loop is free: this coroutine runs while fsync waits
            await asyncio.sleep(0)
            ticks += 1
        assert not commit.done()
        held.go.set()
        await commit
        return ticks

    assert asyncio.run(scenario()) == 20
    assert len(held.flushed) == 2  # the file, then its folder
    assert (tmp_path / "fw.bin").read_bytes() == b"x" * 4096


def test_a_commit_cancelled_mid_flush_waits_and_leaves_nothing_final(
    tmp_path: Path, held: HeldFsync
) -> None:
    backend = LocalBackend("a", tmp_path, durable=True)

    async def scenario() -> None:
        handle = await backend.open_write(("fw.bin",))
        await handle.write(0, b"y" * 4096)
        commit = asyncio.create_task(handle.commit())
        await _entered(held)
        commit.cancel()
        await asyncio.sleep(0.05)
        assert not commit.done()  # still waiting for the flush it started
        held.go.set()
        with pytest.raises(asyncio.CancelledError):
            await commit
        await handle.abort()  # what the pipeline does with a cancelled upload

    asyncio.run(scenario())
    assert held.flushed and not held.closed_under_it
    assert not (tmp_path / "fw.bin").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TEMP_PREFIX)]
