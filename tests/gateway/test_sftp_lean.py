"""conduit._asyncssh.sftplean: the lean OPEN/READ/WRITE/CLOSE answer as asyncssh does.

A real asyncssh server and client over loopback; the client speaks raw SFTP on
the subsystem channel, so every reply is compared byte for byte between
asyncssh's own handler and the lean one (and Conduit's narrowed handler built
on it), for the answers that succeed and for every kind of failure asyncssh
maps: SFTP errors, OS errors, malformed packets, a method the server does not
implement, a bug in the server.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import struct
from collections.abc import Callable
from typing import Any

import asyncssh
import pytest
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

from conduit._asyncssh import tuning
from conduit._asyncssh.channel import binary_channel
from conduit._asyncssh.sftplean import LeanSFTPHandler
from conduit._asyncssh.sftpserver import NarrowSFTPHandler

FXP_INIT, FXP_OPEN, FXP_CLOSE, FXP_READ, FXP_WRITE, FXP_FSETSTAT = 1, 3, 4, 5, 6, 10
FXF_READ, FXF_WRITE, FXF_CREAT = 1, 2, 8
CONTENT = bytes(range(256)) * 20  # 5,120 bytes
#: (type, fields in order) of the attributes each OPEN handed the server.
OPENED: list[tuple[type, list[tuple[str, object]]]] = []


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def string(value: bytes) -> bytes:
    return u32(len(value)) + value


class Files(asyncssh.SFTPServer):
    """Files in memory; some names fail the way a real server can."""

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        OPENED.append((type(attrs), list(vars(attrs).items())))
        if path == b"missing":
            raise asyncssh.SFTPNoSuchFile("no such file")
        if path == b"denied":
            raise OSError(errno.EACCES, "Permission denied")
        if path == b"bug":
            raise RuntimeError("a bug in the server")
        if path == b"unimplemented":
            raise NotImplementedError
        return [path, attrs.permissions]

    def read(self, file_obj: object, offset: int, size: int) -> bytes:  # not a coroutine
        assert isinstance(file_obj, list)
        return CONTENT[offset : offset + size] if file_obj[0] == b"a" else b""

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, list)
        if file_obj[0] == b"full":
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(data)

    async def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        assert isinstance(file_obj, list)
        if file_obj[0] == b"full":
            raise OSError(errno.EROFS, "Read-only file system")

    async def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, list)
        if file_obj[0] == b"badclose":
            raise asyncssh.SFTPFailure("close failed")


def _session(handler_class: type[Any]) -> Callable[[], SSHServerStreamSession[bytes]]:
    class Session(SSHServerStreamSession[bytes]):
        def __init__(self) -> None:
            super().__init__(None)

        def subsystem_requested(self, subsystem: str) -> bool:
            return subsystem == "sftp"

        def session_started(self) -> None:
            chan = binary_channel(self)
            reader, writer = SSHReader[bytes](self, chan), SSHWriter[bytes](self, chan)
            handler = handler_class(Files(chan), reader, writer, 3)
            asyncio.get_running_loop().create_task(handler.run())

    return Session


def _server(handler_class: type[Any]) -> Callable[[], asyncssh.SSHServer]:
    class Open(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return False  # no authentication: a test server on loopback

        def session_requested(self) -> SSHServerStreamSession[bytes]:
            return _session(handler_class)()

    return Open


def _requests() -> list[bytes]:
    """(type, body) of each request after INIT; ids are added in order."""
    h0, h1, h2, h3 = u32(0), u32(1), u32(2), u32(3)
    perms = u32(4) + u32(0o640)  # FILEXFER_ATTR_PERMISSIONS
    return [
        bytes([FXP_OPEN]) + string(b"a") + u32(FXF_READ) + u32(0),
        bytes([FXP_READ]) + string(h0) + u64(0) + u32(32768),
        bytes([FXP_READ]) + string(h0) + u64(len(CONTENT)) + u32(32768),  # EOF
        bytes([FXP_READ]) + string(b"nope") + u64(0) + u32(10),  # invalid handle
        bytes([FXP_READ]) + string(h0) + u64(0) + u32(10) + b"junk",  # trailing bytes
        bytes([FXP_READ]) + string(h0) + u64(0),  # truncated
        bytes([FXP_OPEN]) + string(b"w") + u32(FXF_WRITE | FXF_CREAT) + perms,
        bytes([FXP_WRITE]) + string(h1) + u64(0) + string(b"hello"),
        bytes([FXP_WRITE]) + string(b"nope") + u64(0) + string(b"x"),
        bytes([FXP_OPEN]) + string(b"full") + u32(FXF_WRITE | FXF_CREAT) + u32(0),
        bytes([FXP_WRITE]) + string(h2) + u64(0) + string(b"x"),  # ENOSPC
        bytes([FXP_FSETSTAT]) + string(h1) + perms,
        bytes([FXP_FSETSTAT]) + string(h2) + u32(0),  # EROFS
        bytes([FXP_FSETSTAT]) + string(b"nope") + perms,
        bytes([FXP_FSETSTAT]) + string(h1) + u32(4),  # truncated attributes
        bytes([FXP_OPEN]) + string(b"missing") + u32(FXF_READ) + u32(0),
        bytes([FXP_OPEN]) + string(b"denied") + u32(FXF_READ) + u32(0),
        bytes([FXP_OPEN]) + string(b"bug") + u32(FXF_READ) + u32(0),
        bytes([FXP_OPEN]) + string(b"unimplemented") + u32(FXF_READ) + u32(0),
        bytes([FXP_OPEN]) + string(b"a"),  # truncated
        bytes([FXP_OPEN]) + string(b"badclose") + u32(FXF_READ) + u32(0),
        bytes([FXP_CLOSE]) + string(h3),  # the server's close fails
        bytes([FXP_CLOSE]) + string(h0) + b"junk",  # trailing bytes
        bytes([FXP_CLOSE]) + string(h0),
        bytes([FXP_CLOSE]) + string(h0),  # closed already: invalid handle
        bytes([FXP_CLOSE]) + string(h1),
        bytes([FXP_CLOSE]),  # truncated
        # v3 attributes with no flags (a download's open, decoded the quick way), and
        # what only looks like them: trailing bytes, flags cut short, flags set
        bytes([FXP_OPEN]) + string(b"a") + u32(FXF_READ) + u32(0) + b"junk",
        bytes([FXP_OPEN]) + string(b"a") + u32(FXF_READ) + u32(0)[:2],
        bytes([FXP_OPEN]) + string(b"a") + u32(FXF_READ) + u32(1) + u64(7),  # a size
        bytes([FXP_OPEN]) + string(b"a") + u32(FXF_READ) + u32(0),
        bytes([FXP_CLOSE]) + string(u32(5)),
        bytes([FXP_CLOSE]) + string(u32(5)),  # closed already
    ]


async def _replies(
    handler_class: type[Any], host_key: asyncssh.SSHKey, sending: str = "whole"
) -> list[bytes]:
    """Each request's reply. ``sending``: one write per request, each answered
    before the next ("whole"); every request in one write ("pipelined"); each
    request in three writes that arrive as separate channel packets, its length
    split ("split")."""
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        server_factory=_server(handler_class),
    )
    port = server.sockets[0].getsockname()[1]
    replies = []
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="u", client_keys=None
        ) as conn:
            writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)

            async def reply() -> bytes:
                length = int.from_bytes(await reader.readexactly(4), "big")
                return await reader.readexactly(length)

            async def send(message: bytes) -> None:
                if sending != "split":
                    writer.write(message)
                    return
                for piece in (message[:2], message[2:7], message[7:]):
                    writer.write(piece)
                    await asyncio.sleep(0.01)  # its own channel packet

            messages = [u32(len(m)) + m for m in _messages()]
            await send(messages[0])  # INIT
            await reply()
            if sending == "pipelined":
                writer.write(b"".join(messages[1:]))
                for _ in messages[1:]:
                    replies.append(await asyncio.wait_for(reply(), 10))
            else:
                for message in messages[1:]:
                    await send(message)
                    replies.append(await asyncio.wait_for(reply(), 10))
    finally:
        server.close()
        await server.wait_closed()
    return replies


def _messages() -> list[bytes]:
    """INIT, then each request with its id."""
    requests = _requests()
    return [bytes([FXP_INIT]) + u32(3)] + [
        r[:1] + u32(pktid) + r[1:] for pktid, r in enumerate(requests, start=1)
    ]


@pytest.fixture(scope="module")
def host_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.mark.parametrize("tuned", [False, True], ids=["asyncssh", "tuned"])
@pytest.mark.parametrize("lean", [LeanSFTPHandler, NarrowSFTPHandler], ids=lambda c: c.__name__)
async def test_replies_are_asyncssh_replies(
    host_key: asyncssh.SSHKey, lean: type[Any], tuned: bool
) -> None:
    if tuned:
        tuning.apply()
    try:
        expected = await _replies(asyncssh.sftp.SFTPServerHandler, host_key)
        got = await _replies(lean, host_key)
    finally:
        tuning.revert()
    assert len(expected) == len(_requests())
    # the cases are what they say: data, EOF, handles, OK, and each failure's status
    assert expected[1][5:9] == u32(len(CONTENT)) and expected[1][9:] == CONTENT
    statuses = {r[5:9] for r in expected if r[0] == 101}
    assert {u32(c) for c in (0, 1, 2, 3, 4, 5, 8)} == statuses  # 4: ENOSPC in v3
    for request, want, have in zip(_requests(), expected, got, strict=True):
        assert have == want, request


async def test_open_attributes_are_asyncssh_attributes(host_key: asyncssh.SSHKey) -> None:
    # An OPEN's empty v3 attributes are made without SFTPAttrs.decode (sftplean):
    # the server must get the same record, field for field, as asyncssh decodes.
    tuning.apply()
    try:
        OPENED.clear()
        expected = await _replies(asyncssh.sftp.SFTPServerHandler, host_key)
        theirs = list(OPENED)
        OPENED.clear()
        got = await _replies(NarrowSFTPHandler, host_key)
        ours = list(OPENED)
    finally:
        tuning.revert()
    assert got == expected
    assert ours == theirs
    empty = (asyncssh.SFTPAttrs, list(vars(asyncssh.SFTPAttrs()).items()))
    assert ours.count(empty) >= 8 and len(ours) > ours.count(empty)


async def test_empty_attributes_skip_decode(
    host_key: asyncssh.SSHKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[bytes] = []
    decode = asyncssh.SFTPAttrs.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type, packet: Any, version: int) -> asyncssh.SFTPAttrs:
        decoded.append(packet.get_remaining_payload())
        return decode(cls, packet, version)  # type: ignore[no-any-return]

    monkeypatch.setattr(asyncssh.SFTPAttrs, "decode", classmethod(counting))
    await _replies(NarrowSFTPHandler, host_key)
    assert u32(4) + u32(0o640) in decoded  # attributes with flags: asyncssh's decode
    assert u32(0) + b"junk" in decoded and u32(0)[:2] in decoded  # look-alikes too
    # one FSETSTAT's (decoded as asyncssh does), never an OPEN's: made the quick way
    assert decoded.count(u32(0)) == 1


@pytest.mark.parametrize("sending", ["pipelined", "split"])
async def test_messages_however_they_arrive(host_key: asyncssh.SSHKey, sending: str) -> None:
    # A whole message is cut off the stream's buffer at once (sftplean); several in
    # one channel packet, or one split across packets (its length too), read the same.
    expected = await _replies(asyncssh.sftp.SFTPServerHandler, host_key)
    assert await _replies(NarrowSFTPHandler, host_key, sending) == expected


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
async def test_message_over_the_limit_ends_the_session(
    host_key: asyncssh.SSHKey, split: bool
) -> None:
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[host_key], server_factory=_server(NarrowSFTPHandler)
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="u", client_keys=None
        ) as conn:
            writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
            writer.write(u32(5) + bytes([FXP_INIT]) + u32(3))
            version = await reader.readexactly(4)
            await reader.readexactly(int.from_bytes(version, "big"))
            big = NarrowSFTPHandler.max_message + 1
            message = u32(big) + bytes([FXP_WRITE]) + b"\0" * 64
            if split:
                writer.write(message[:3])
                await asyncio.sleep(0.01)
                writer.write(message[3:])
            else:
                writer.write(message)
            # refused unread: the server ends the session instead of buffering 256 KiB+
            assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        server.close()
        await server.wait_closed()


async def test_no_debug_message_is_built_while_debug_is_off(
    host_key: asyncssh.SSHKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []

    def spy(name: str, original: Callable[..., str]) -> Callable[..., str]:
        def call(*args: Any) -> str:
            built.append((name, args))
            return original(*args)

        return call

    for name in ("hide_empty", "plural"):
        monkeypatch.setattr(asyncssh.sftp, name, spy(name, getattr(asyncssh.sftp, name)))
    assert not logging.getLogger("asyncssh.sftp").isEnabledFor(logging.DEBUG)
    replies = await _replies(NarrowSFTPHandler, host_key)
    assert replies[1][9:] == CONTENT
    assert built == []


def _message(record: logging.LogRecord) -> str:
    return record.getMessage().split("] ", 1)[-1]  # without "[conn=N, chan=N] "


async def test_debug_logging_keeps_asyncssh_messages(
    host_key: asyncssh.SSHKey, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="asyncssh"):
        expected = await _replies(asyncssh.sftp.SFTPServerHandler, host_key)
        theirs = [_message(r) for r in caplog.records if "sftp" in r.name]
        caplog.clear()
        got = await _replies(NarrowSFTPHandler, host_key)
        ours = [_message(r) for r in caplog.records if "sftp" in r.name]
    assert got == expected
    assert any("Received open request for" in m for m in ours)
    assert [m for m in ours if "Received" in m or "Sending" in m] == [
        m for m in theirs if "Received" in m or "Sending" in m
    ]


async def test_end_of_file_mid_message_ends_the_session(host_key: asyncssh.SSHKey) -> None:
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[host_key], server_factory=_server(NarrowSFTPHandler)
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="u", client_keys=None
        ) as conn:
            writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
            writer.write(u32(5) + bytes([FXP_INIT]) + u32(3))
            version = await reader.readexactly(4)
            await reader.readexactly(int.from_bytes(version, "big"))
            opening = _messages()[1]
            writer.write((u32(len(opening)) + opening)[:9])  # an OPEN's length and a little
            await asyncio.sleep(0.01)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        server.close()
        await server.wait_closed()
