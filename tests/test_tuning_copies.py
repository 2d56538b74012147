"""conduit._asyncssh: the download copies taken out (tuning 3d, 3e).

Each change is checked to be in effect (these fail on the code before it), and
to keep what goes over the wire byte for byte: a channel buffer sent through a
view survives a send window smaller than the buffer, packets smaller than the
buffer, and a rekey every megabyte (packets deferred while it runs keep their
own bytes).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import asyncssh
import pytest
from asyncssh.channel import SSHChannel
from asyncssh.constants import MSG_CHANNEL_DATA

from conduit._asyncssh import sendlane, tuning
from tests.test_tuning import echo_over_ssh


@pytest.fixture
def tuned() -> Iterator[None]:
    tuning.apply()
    yield


# -- tuning 3d: a channel buffer sent through a view; 3e: SFTP replies built there -----


def test_flush_sends_views_of_the_buffer(tuned: None) -> None:
    chan = _Channel(window=100_000, pktsize=32 * 1024)
    data = os.urandom(255 * 1024)
    chan._send_buf.append((bytearray(data), None))
    chan._send_buf_len = len(data)
    sendlane._flush_send_buf(chan)
    # The window allows 100,000 bytes: three full packets and one cut short.
    assert [len(p) for p in chan.packets] == [32768, 32768, 32768, 1696]
    assert all(type(p) is memoryview for p in chan.packets[:-1])
    assert b"".join(chan.sent) == data[:100_000]
    assert bytes(chan._send_buf[0][0]) == data[100_000:]  # the rest, cut once
    assert chan._send_buf_len == len(data) - 100_000
    chan._send_window = 1 << 20
    sendlane._flush_send_buf(chan)
    assert b"".join(chan.sent) == data and not chan._send_buf and chan._send_buf_len == 0


class _Channel:
    """Just the state _flush_send_buf reads and writes; sends are recorded."""

    def __init__(self, window: int, pktsize: int) -> None:
        self._send_buf: list[tuple[bytearray, int | None]] = []
        self._send_buf_len = 0
        self._send_window = window
        self._send_pktsize = pktsize
        self._send_state = "open"
        self._send_chan = 1
        self._conn = SimpleNamespace(_send_encryption=None, _transport=None)  # not the lane's
        self.packets: list[Any] = []
        self.sent: list[bytes] = []

    def send_packet(self, pkttype: int, *args: Any) -> None:
        assert pkttype == MSG_CHANNEL_DATA
        self.packets.append(args[-1])
        self.sent.append(bytes(args[-1]))  # what the connection copies into the packet

    def _pause_resume_writing(self) -> None:
        pass


@pytest.mark.parametrize(("window", "pktsize"), [(50_000, 7_000), (2_000_000, 32_768)])
async def test_small_windows_and_packets_byte_exact(tuned: None, window: int, pktsize: int) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 333)
    assert await asyncio.wait_for(_round_trip(payload, window, pktsize), 60) == payload


async def test_sftp_read_reply_built_in_the_channel_buffer(
    tuned: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    appended: list[Any] = []
    write = SSHChannel.write

    def spy(self: Any, data: Any, datatype: Any = None) -> None:
        appended.append(len(data))
        write(self, data, datatype)

    monkeypatch.setattr(SSHChannel, "write", spy)
    monkeypatch.setattr(tuning, "_chan_write", spy)  # the spy stands for asyncssh's write
    data = os.urandom(600 * 1024)
    (tmp_path / "f").write_bytes(data)
    assert await asyncio.wait_for(_sftp_get(tmp_path), 60) == data
    assert not appended  # every reply, the read's data and a handle or status alike


# -- end to end helpers ------------------------------------------------------------------


def _keys() -> tuple[asyncssh.SSHKey, asyncssh.SSHKey, Any]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    auth = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    return host_key, client_key, auth


async def _round_trip(payload: bytes, window: int = 2 * 1024 * 1024, pktsize: int = 32768) -> bytes:
    # A rekey every 1 MiB: packets deferred while it runs hold channel data.
    both = {"encryption_algs": ["aes128-gcm@openssh.com"], "rekey_bytes": 1024 * 1024}
    return await echo_over_ssh(payload, both, window=window, max_pktsize=pktsize)


async def _sftp_get(root: Any) -> bytes:
    host_key, client_key, auth = _keys()

    class Root(asyncssh.SFTPServer):
        def __init__(self, chan: Any) -> None:
            super().__init__(chan, chroot=str(root).encode())

    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=auth,
        encryption_algs=["aes128-gcm@openssh.com"],
        sftp_factory=Root,
        line_editor=False,  # as Conduit listens (the editor's channel wrapper takes write())
    )
    try:
        port = server.sockets[0].getsockname()[1]
        async with (
            asyncssh.connect(
                "127.0.0.1", port, known_hosts=None, client_keys=[client_key], username="u"
            ) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open("/f", "rb", block_size=255 * 1024) as f,
        ):
            return bytes(await f.read())
    finally:
        server.close()
        await server.wait_closed()
