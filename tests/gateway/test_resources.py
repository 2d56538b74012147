"""What one client can make the gateway hold is bounded (``[gateway.limits]``).

Hostile clients first: handles opened and never closed, writes sent ahead of
a gap that never fills, listings of big folders left open, and read handles
opened until the process runs out of descriptors. Each is driven by an
asyncssh SFTP client speaking the wire protocol, bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import asyncssh
import pytest
from asyncssh import FXF_CREAT, FXF_READ, FXF_WRITE

from conduit.gateway.resources import Descriptors
from tests.support.gateway import RunningGateway, policy_text, wait_for

Build = Callable[[str], RunningGateway]


@pytest.fixture
def limited(make_gateway: Callable[..., RunningGateway]) -> Build:
    def build(limits: str) -> RunningGateway:
        first = make_gateway()
        text = policy_text(first.root, first.keys).replace(
            "[gateway.limits]\n", f"[gateway.limits]\n{limits}\n"
        )
        return make_gateway(text=text)

    return build


def handler(sftp: asyncssh.SFTPClient) -> Any:
    """The client's wire-level handler: raw OPEN/WRITE/OPENDIR, no client-side help."""
    return sftp._handler


def files(running: RunningGateway, count: int) -> None:
    for i in range(count):
        (running.area("outbox") / f"f{i:03}.txt").write_bytes(b"x" * 10)


def test_handles_per_session_are_capped(limited: Build) -> None:
    running = limited("max_handles_per_session = 4")
    files(running, 6)

    async def scenario() -> tuple[str, str, bytes]:
        async with running.connect() as conn, conn.start_sftp_client() as sftp:
            h = handler(sftp)
            limits = asyncssh.SFTPLimits.decode(await h._make_request(b"limits@openssh.com"))
            assert limits.max_open_handles == 4  # advertised to clients that ask
            held = [
                await h.open(f"/outbox/f{i:03}.txt".encode(), FXF_READ, _attrs()) for i in range(4)
            ]
            with pytest.raises(asyncssh.SFTPFailure) as file_refused:
                await h.open(b"/outbox/f004.txt", FXF_READ, _attrs())
            with pytest.raises(asyncssh.SFTPFailure) as dir_refused:
                await h.opendir(b"/outbox")
            await h.close(held.pop())
            again = await h.open(b"/outbox/f005.txt", FXF_READ, _attrs())
            return str(file_refused.value), str(dir_refused.value), again

    file_reason, dir_reason, again = running.call(scenario())
    assert "too many open handles in this session (limit 4)" in file_reason
    assert "too many open handles in this session" in dir_reason
    assert again
    denied = running.recorder.of("access.denied")
    assert [e["path"] for e in denied] == ["/outbox/f004.txt", "/outbox"]
    assert all("too many open handles" in e["reason"] for e in denied)


def test_handles_per_user_span_sessions_and_are_released(limited: Build) -> None:
    running = limited("max_handles_per_session = 4\nmax_handles_per_user = 5")
    files(running, 8)

    async def scenario() -> tuple[str, bytes]:
        async with running.connect() as second_conn, second_conn.start_sftp_client() as second:
            async with running.connect() as first_conn, first_conn.start_sftp_client() as first:
                for i in range(4):
                    await handler(first).open(f"/outbox/f{i:03}.txt".encode(), FXF_READ, _attrs())
                await handler(second).open(b"/outbox/f004.txt", FXF_READ, _attrs())
                with pytest.raises(asyncssh.SFTPFailure) as refused:
                    await handler(second).open(b"/outbox/f005.txt", FXF_READ, _attrs())
            # The first connection ended without closing its handles: they are released.
            counters = running.gateway.counters.handles_per_user
            for _ in range(200):  # bounded: the gateway hears the close within moments
                if counters["alice"] == 1:
                    break
                await asyncio.sleep(0.05)
            assert counters["alice"] == 1
            return str(refused.value), await handler(second).open(
                b"/outbox/f006.txt", FXF_READ, _attrs()
            )

    reason, reopened = running.call(scenario())
    assert "too many open handles for this user (limit 5)" in reason
    assert reopened


def _attrs() -> asyncssh.SFTPAttrs:
    return asyncssh.SFTPAttrs()


CHUNK = 64 * 1024


def test_writes_ahead_of_a_gap_are_bounded_per_session(limited: Build) -> None:
    running = limited('max_reorder_per_session = "1MiB"')

    async def scenario() -> tuple[int, str, bytes]:
        async with running.connect() as conn, conn.start_sftp_client() as sftp:
            h = handler(sftp)
            handles = [
                await h.open(f"/inbox/gap{i}.bin".encode(), FXF_WRITE | FXF_CREAT, _attrs())
                for i in range(3)
            ]
            accepted = 0
            with pytest.raises(asyncssh.SFTPFailure) as refused:
                # Offset 0 never comes: every write is held, spread over 3 uploads.
                for k in range(1, 64):
                    await h.write(handles[k % 3], k * CHUNK, b"a" * CHUNK)
                    accepted += 1
            for handle in handles:
                with contextlib.suppress(asyncssh.SFTPError):
                    await h.close(handle)  # an upload with a gap never commits
            # The session's budget was given back: a whole upload still works.
            async with sftp.open("/inbox/after.bin", "wb") as f:
                await f.write(b"b" * 3 * CHUNK)
            return accepted, str(refused.value), (running.area("inbox") / "after.bin").read_bytes()

    accepted, reason, after = running.call(scenario())
    assert accepted == 16  # 1 MiB of 64 KiB writes, then refused
    assert "too many bytes written out of order" in reason
    assert after == b"b" * 3 * CHUNK
    assert sorted(p.name for p in running.area("inbox").iterdir()) == ["after.bin"]
    assert running.gateway.counters.reorder.held == 0


def test_writes_ahead_of_a_gap_are_bounded_in_total(limited: Build) -> None:
    running = limited('max_reorder_per_session = "16MiB"\nmax_reorder_total = "1MiB"')

    async def scenario() -> tuple[str, int]:
        async with running.connect() as a_conn, running.connect() as b_conn:
            async with a_conn.start_sftp_client() as a, b_conn.start_sftp_client() as b:
                ha = await handler(a).open(b"/inbox/a.bin", FXF_WRITE | FXF_CREAT, _attrs())
                hb = await handler(b).open(b"/inbox/b.bin", FXF_WRITE | FXF_CREAT, _attrs())
                for k in range(1, 13):  # 768 KiB held by the first session
                    await handler(a).write(ha, k * CHUNK, b"a" * CHUNK)
                accepted = 0
                with pytest.raises(asyncssh.SFTPFailure) as refused:
                    for k in range(1, 13):
                        await handler(b).write(hb, k * CHUNK, b"b" * CHUNK)
                        accepted += 1
                return str(refused.value), accepted

    reason, accepted = running.call(scenario())
    assert accepted == 4  # what the other session left of the 1 MiB
    assert "too many bytes written out of order" in reason
    assert wait_for(lambda: running.gateway.counters.reorder.held == 0)
    assert list(running.area("inbox").iterdir()) == []


def test_a_listing_is_complete_across_pages(gw: RunningGateway) -> None:
    outbox = gw.area("outbox")
    names = {f"n{i:04}.txt" for i in range(700)}
    for name in names:
        (outbox / name).write_bytes(b"")
    (outbox / "sub").mkdir()
    (outbox / ".conduit-part-x").write_bytes(b"")  # an upload in progress: hidden
    (outbox / "bad\x1bname").write_bytes(b"")  # breaks the name rule: hidden

    async def scenario() -> list[str]:
        async with gw.connect() as conn, conn.start_sftp_client() as sftp:
            return list(await sftp.listdir("/outbox"))

    listed = gw.call(scenario())
    assert len(listed) == len(set(listed))
    assert set(listed) == names | {"sub"}


def test_open_listings_do_not_hold_whole_folders(limited: Build) -> None:
    running = limited("max_handles_per_session = 64")
    outbox = running.area("outbox")
    for i in range(5000):
        (outbox / f"entry-with-a-longish-name-{i:05}.dat").write_bytes(b"")

    async def scenario() -> tuple[int, int]:
        async with running.connect() as conn, conn.start_sftp_client() as sftp:
            h = handler(sftp)
            handles = [await h.opendir(b"/outbox") for _ in range(20)]
            first_pages = [len((await h.readdir(handle))[0]) for handle in handles]
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                handles += [await h.opendir(b"/outbox") for _ in range(20)]
                for handle in handles[20:]:
                    await h.readdir(handle)
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            return min(first_pages), grown

    page, grown = running.call(scenario(), timeout=60)
    assert page > 0
    # Materialised, 20 listings of 5,000 entries held ~60 MB; paged, a page each.
    assert grown < 8 * 1024 * 1024, grown


def test_descriptor_reserve_refuses_new_handles_and_connections(limited: Build) -> None:
    running = limited("max_handles_per_session = 1000")
    files(running, 80)
    descriptors = running.gateway.counters.descriptors
    probe = Descriptors(0)

    async def scenario() -> tuple[int, str, bool]:
        async with running.connect() as conn, conn.start_sftp_client() as sftp:
            h = handler(sftp)
            # Leave 20 descriptors above the reserve, then open until refused.
            # Earlier tests' garbage (sockets, files) is closed first, so the
            # count does not drift while this one opens its handles.
            gc.collect()
            descriptors.reserve = probe.limit() - probe.in_use() - 20
            opened = []
            with pytest.raises(asyncssh.SFTPFailure) as refused:
                for i in range(80):
                    opened.append(await h.open(f"/outbox/f{i:03}.txt".encode(), FXF_READ, _attrs()))
            try:
                async with running.connect():
                    connected = True
            except (asyncssh.Error, OSError):
                connected = False
            with pytest.raises(asyncssh.ChannelOpenError, match="out of file descriptors"):
                await conn.start_sftp_client()  # a new session on a live connection
            for handle in opened:
                await h.close(handle)
            return len(opened), str(refused.value), connected

    try:
        opened, reason, connected = running.call(scenario())
    finally:
        descriptors.reserve = 64
    # ~20 (this process's other threads may open or close a few meanwhile)
    assert 5 <= opened <= 40
    assert "server out of file descriptors" in reason
    assert connected is False
    running.call(running.gateway.noise.flush())
    refused = running.recorder.of("connection.refused")
    assert refused and "out of file descriptors" in refused[0]["reason"]

    async def later() -> list[str]:  # descriptors back: logins work again
        async with running.connect() as conn, conn.start_sftp_client() as sftp:
            return list(await sftp.listdir("/outbox"))

    assert len(running.call(later())) == 80


def test_a_new_reserve_is_counted_against_at_once() -> None:
    descriptors = Descriptors(1)
    assert descriptors.short() is None  # plenty free: trusted for a moment
    descriptors.reserve = descriptors.limit()  # no descriptor could be spared now
    reason = descriptors.short()
    assert reason is not None and "server out of file descriptors" in reason


def test_openssh_sftp_lists_a_big_folder_across_pages(gw: RunningGateway) -> None:
    names = {f"n{i:04}.txt" for i in range(1000)}
    for name in names:
        (gw.area("outbox") / name).write_bytes(b"")
    result = gw.sftp("ls -1 /outbox\n")
    assert result.returncode == 0, result.stderr
    listed = [line.rsplit("/", 1)[-1] for line in result.stdout.splitlines()[1:]]
    assert sorted(listed) == sorted(names)
