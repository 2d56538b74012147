"""The malware scan against a real clamd; fake servers only for garbage and silence."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conduit.inspect.base import State, Verdict
from conduit.inspect.clamd import (
    TOO_LARGE,
    UNAVAILABLE,
    ClamdStream,
    Unconfigured,
    parse_address,
    parse_reply,
    ping,
)
from tests.support.clamd import EICAR, MARKER, Clamd, start_clamd, stop_clamd

CHUNK = 64 * 1024


async def scan(address: str, data: bytes, timeout: float = 10.0, chunk: int = CHUNK) -> Verdict:
    stream = ClamdStream(parse_address(address), timeout)
    for at in range(0, len(data), chunk):
        await stream.feed(data[at : at + chunk])
    return await stream.finish()


async def test_a_clean_file_passes(clamd: Clamd) -> None:
    verdict = await scan(clamd.address, os.urandom(3 * CHUNK + 5))
    assert verdict.state is State.PASSED and verdict.reason == "scan: clean"
    assert verdict.duration > 0


async def test_eicar_split_across_chunks_is_found(clamd: Clamd) -> None:
    data = os.urandom(100) + EICAR + os.urandom(100)
    verdict = await scan(clamd.address, data, chunk=130)  # the string spans two chunks
    assert verdict.state is State.FAILED
    assert verdict.reason.startswith("scan: malware found (Conduit.Test.Eicar")


async def test_the_custom_signature_is_found_deep_in_a_file(clamd: Clamd) -> None:
    data = b"\0" * (2 * 1024 * 1024) + MARKER
    verdict = await scan(clamd.address, data)
    assert verdict.state is State.FAILED
    assert "Conduit.Test.Marker" in verdict.reason


async def test_an_empty_chunk_does_not_end_the_stream_early(clamd: Clamd) -> None:
    stream = ClamdStream(parse_address(clamd.address), 10.0)
    await stream.feed(b"harmless ")
    await stream.feed(b"")  # would be clamd's terminator if forwarded
    await stream.feed(EICAR)
    verdict = await stream.finish()
    assert verdict.state is State.FAILED and "Eicar" in verdict.reason


async def test_an_empty_file_is_scanned_and_clean(clamd: Clamd) -> None:
    verdict = await ClamdStream(parse_address(clamd.address), 10.0).finish()
    assert verdict.state is State.PASSED


async def test_a_file_over_stream_max_length_fails_closed(tmp_path: Path) -> None:
    small = start_clamd(tmp_path / "small", stream_max=1024 * 1024)
    try:
        verdict = await scan(small.address, b"\0" * (3 * 1024 * 1024))
    finally:
        stop_clamd(small)
    assert verdict.state is State.FAILED
    assert verdict.reason == TOO_LARGE
    assert "StreamMaxLength" in verdict.detail


async def test_a_scanner_killed_mid_stream_fails_closed(tmp_path: Path) -> None:
    doomed = start_clamd(tmp_path / "doomed")
    stream = ClamdStream(parse_address(doomed.address), 5.0)
    try:
        await stream.feed(os.urandom(CHUNK))
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait(10)
        for _ in range(64):  # keep uploading: the writes must not hang or raise
            await stream.feed(os.urandom(CHUNK))
        verdict = await stream.finish()
    finally:
        stop_clamd(doomed)
    assert verdict.state is State.FAILED
    assert verdict.reason == UNAVAILABLE


async def test_no_scanner_listening_fails_closed(tmp_path: Path) -> None:
    verdict = await scan(f"unix:{tmp_path / 'none.sock'}", b"data")
    assert verdict.state is State.FAILED and verdict.reason == UNAVAILABLE
    assert "none.sock" in verdict.detail


async def test_a_closed_tcp_port_fails_closed() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    verdict = await scan(f"tcp://127.0.0.1:{port}", b"data")
    assert verdict.reason == UNAVAILABLE


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def fake_clamd(path: Path, handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_unix_server(handler, str(path))
    try:
        yield f"unix:{path}"
    finally:
        server.close()


@pytest.mark.parametrize(
    "reply",
    [b"hello\0", b"stream: OK", b"stream: OK\0extra\0", b"\xff\xfe\0", b"x" * 10000],
)
async def test_a_garbage_reply_fails_closed(tmp_path: Path, reply: bytes) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(reply)
        await writer.drain()
        writer.close()

    async for address in fake_clamd(tmp_path / "fake.sock", answer):
        verdict = await scan(address, b"data", timeout=5.0)
        assert verdict.state is State.FAILED
        assert verdict.reason == UNAVAILABLE


async def test_a_silent_scanner_times_out_and_fails_closed(tmp_path: Path) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing

    async for address in fake_clamd(tmp_path / "silent.sock", silent):
        verdict = await scan(address, b"x" * (8 * 1024 * 1024), timeout=0.5, chunk=1024 * 1024)
        assert verdict.reason == UNAVAILABLE
        assert "timed out" in verdict.detail
        assert await ping(parse_address(address), 0.3) is not None
    for writer in held:
        writer.close()


def test_replies_are_parsed_strictly() -> None:
    assert parse_reply(b"stream: OK\0")[0] is State.PASSED
    state, reason, _ = parse_reply(b"stream: Win.Test.EICAR_HDB-1 FOUND\0")
    assert state is State.FAILED and reason == "scan: malware found (Win.Test.EICAR_HDB-1)"
    assert parse_reply(b"stream: OK FOUND\n\0")[1] == UNAVAILABLE
    assert parse_reply(b"stream: bad\x1bname FOUND\0")[1] == UNAVAILABLE
    assert parse_reply(b"INSTREAM size limit exceeded. ERROR\0")[1] == TOO_LARGE
    assert parse_reply(b"Can't allocate memory ERROR\0")[1] == "scan: scanner error"


def test_addresses() -> None:
    assert parse_address("unix:/run/clamd.ctl").path == Path("/run/clamd.ctl")
    tcp = parse_address("tcp://[::1]:3310")
    assert (tcp.host, tcp.port) == ("::1", 3310)
    for bad in ("unix:", "tcp://host", "tcp://:3310", "tcp://h:0", "http://h:1", "/run/c"):
        with pytest.raises(ValueError):
            parse_address(bad)


async def test_ping(clamd: Clamd, tmp_path: Path) -> None:
    assert await ping(parse_address(clamd.address), 5.0) is None
    why = await ping(parse_address(f"unix:{tmp_path / 'gone.sock'}"), 5.0)
    assert why is not None and "not reachable" in why


async def test_without_a_configured_scanner_every_upload_fails() -> None:
    stream = Unconfigured()
    await stream.feed(b"data")
    verdict = await stream.finish()
    assert verdict.state is State.FAILED and verdict.reason == UNAVAILABLE


def test_the_fixture_starts_quickly(clamd: Clamd) -> None:
    # Not a timing assertion: the start time is reported for the record.
    print(f"clamd up in {clamd.started_in:.3f} s")
    assert clamd.alive()
