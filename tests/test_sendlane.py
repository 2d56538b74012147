"""conduit._asyncssh.sendlane: channel data sealed and written in one step (AES-GCM, ChaCha20).

Downloads between an asyncssh server and client in this process: each must
arrive byte for byte, through the lane where the lane applies (counted by its
padding) and around it everywhere else (other ciphers, compression, packet
logging, a send_packet wrapped after apply, after revert). The books the lane
keeps for the connection are checked against the peer's: the server's send
sequence number against the client's receive sequence number, and its rekey
byte count by the key exchanges it starts (a rekey every 1 MiB: packets
deferred while one runs must follow in order, as byte-exact data shows).
Real OpenSSH clients read the lane's packets in tests/gateway/test_send_path.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncssh
import pytest
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE, MSG_KEXINIT, MSG_NEWKEYS
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketLogger, String

from conduit._asyncssh import sendlane, tuning

GCM = "aes128-gcm@openssh.com"
CHACHA = "chacha20-poly1305@openssh.com"
MIB = 1024 * 1024
#: The lane's two ciphers (AES-GCM: run-time change 12; ChaCha20-Poly1305: 15).
CIPHERS = pytest.mark.parametrize("cipher", [GCM, CHACHA], ids=["gcm", "chacha20"])


@pytest.fixture
def lane(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Tuned; yields a list that gets one entry per packet sent through the lane."""
    tuning.apply()
    taken: list[int] = []
    padding = sendlane._padding

    def counted(length: int) -> bytes:
        taken.append(length)
        return padding(length)

    monkeypatch.setattr(sendlane, "_padding", counted)
    yield taken


class Download:
    """One download over loopback: the server writes ``payload`` to stdout."""

    def __init__(self, payload: bytes, chunk: int = 255 * 1024, handover: bool = False) -> None:
        self.payload = payload
        self.chunk = chunk
        self.handover = handover
        #: called with the server's connection before each chunk is written
        self.before_chunk: Any = None
        self.client_conn: Any = None
        #: also written to stderr (extended data), chunk by chunk with stdout
        self.errors = b""
        self.server_conns: list[SSHConnection] = []
        self.finished = asyncio.Event()
        self.server_error: BaseException | None = None

    async def _serve(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        out: Any = sendlane.HandOverWriter(process.stdout) if self.handover else process.stdout
        try:
            for at in range(0, len(self.payload), self.chunk):
                if self.before_chunk:
                    self.before_chunk(process.channel.get_connection())
                out.write(self.payload[at : at + self.chunk])
                if self.errors:
                    process.stderr.write(self.errors[at : at + self.chunk])
                await out.drain()
                await asyncio.sleep(0)  # the peer's packets are read between chunks
            process.exit(0)
        except (BrokenPipeError, ConnectionError, asyncssh.Error) as exc:
            self.server_error = exc
        finally:
            self.finished.set()

    @contextlib.asynccontextmanager
    async def listening(self, server: dict[str, Any]) -> AsyncIterator[tuple[int, Any]]:
        """A loopback server that serves this download: its port and the client's key."""
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        listener = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            process_factory=self._serve,
            authorized_client_keys=asyncssh.import_authorized_keys(
                client_key.export_public_key().decode()
            ),
            acceptor=self.server_conns.append,
            encoding=None,
            line_editor=False,  # as Conduit listens (the editor's channel wrapper takes write())
            **server,
        )
        try:
            yield listener.sockets[0].getsockname()[1], client_key
        finally:
            listener.close()
            await listener.wait_closed()

    async def run(self, server: dict[str, Any], client: dict[str, Any], **run: Any) -> bytes:
        async with self.listening(server) as (port, client_key):
            async with asyncssh.connect(
                "127.0.0.1",
                port,
                known_hosts=None,
                client_keys=[client_key],
                username="u",
                **client,
            ) as conn:
                self.client_conn = conn
                result = await conn.run(encoding=None, **run)
                (srv,) = self.server_conns
                # Every packet the server sealed reached the client with the
                # number the server counted for it (once the last ones, of a
                # key exchange still running, are read: up to 5 s).
                for _ in range(500):
                    if srv._send_seq == conn._recv_seq:
                        break
                    await asyncio.sleep(0.01)
                assert srv._send_seq == conn._recv_seq
        assert isinstance(result.stdout, bytes)
        assert result.stderr == self.errors
        return result.stdout


def _algs(cipher: str = GCM, compression: str = "none", **more: Any) -> dict[str, Any]:
    return {"encryption_algs": [cipher], "compression_algs": [compression], **more}


@pytest.fixture
def kexinits(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every key exchange a connection starts: True where the server started it."""
    started: list[bool] = []
    send_kexinit = SSHConnection._send_kexinit

    def counted(self: SSHConnection) -> None:
        started.append(self.is_server())
        send_kexinit(self)

    monkeypatch.setattr(SSHConnection, "_send_kexinit", counted)
    return started


@CIPHERS
@pytest.mark.parametrize(
    ("window", "pktsize", "rekey"),
    [(2 * MIB, 32768, None), (50_000, 7_000, MIB), (2 * MIB, 32768, MIB), (300_000, 32768, MIB)],
)
async def test_download_through_the_lane_byte_exact(
    lane: list[int],
    kexinits: list[bool],
    monkeypatch: pytest.MonkeyPatch,
    window: int,
    pktsize: int,
    rekey: int | None,
    cipher: str,
) -> None:
    received = _client_receives(monkeypatch)
    payload = os.urandom(4 * MIB + 4321)
    server = _algs(cipher) if rekey is None else _algs(cipher, rekey_bytes=rekey)
    down = Download(payload)
    got = await asyncio.wait_for(
        down.run(server, _algs(cipher), window=window, max_pktsize=pktsize), 120
    )
    assert got == payload
    if not rekey:
        assert len(lane) >= len(payload) // pktsize  # the data went through the lane
    else:
        # Packets deferred while a key exchange runs go the old way after it.
        assert lane
        # The lane counted its bytes towards the server's key exchanges: one
        # at the start, then about one per MiB sent.
        assert kexinits.count(True) >= 1 + 3
        _no_data_inside_a_key_exchange(received)


def _client_receives(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The type of every packet the client side receives, in order."""
    received: list[int] = []
    log = SSHPacketLogger.log_received_packet

    def spy(self: Any, pkttype: int, pktid: Any, packet: Any, note: str = "") -> None:
        conn = self if isinstance(self, SSHConnection) else getattr(self, "_conn", None)
        if conn is not None and conn.is_client():
            received.append(pkttype)
        log(self, pkttype, pktid, packet, note)

    monkeypatch.setattr(SSHPacketLogger, "log_received_packet", spy)
    return received


def _no_data_inside_a_key_exchange(received: list[int]) -> None:
    # RFC 4253 7.1: once a side has sent KEXINIT it sends nothing but key
    # exchange messages until its NEWKEYS; the server's data waits (deferred).
    assert received.count(MSG_KEXINIT) >= 2
    inside = False
    for pkttype in received:
        if pkttype == MSG_KEXINIT:
            inside = True
        elif pkttype == MSG_NEWKEYS:
            inside = False
        elif inside:
            assert pkttype < 50, f"message {pkttype} between KEXINIT and NEWKEYS"


@CIPHERS
async def test_stderr_beside_the_lane(lane: list[int], cipher: str) -> None:
    # Extended data (stderr) goes the old way, stdout through the lane: both
    # arrive whole, each in its own stream.
    payload, errors = os.urandom(2 * MIB + 5), os.urandom(MIB + 3)
    down = Download(payload)
    down.errors = errors
    algs = _algs(cipher, rekey_bytes=MIB)
    got = await asyncio.wait_for(down.run(algs, _algs(cipher), window=300_000), 120)
    assert got == payload  # and stderr == errors, checked by run()
    assert lane


@CIPHERS
async def test_rekey_by_time_starts_from_the_lane(
    lane: list[int], kexinits: list[bool], cipher: str
) -> None:
    # The rekey time is checked before every packet, as send_packet does: a
    # time found passed mid-download starts a key exchange from the next packet.
    payload = os.urandom(4 * MIB + 1)
    down = Download(payload)
    chunks = 0

    def expire(conn: Any) -> None:
        nonlocal chunks
        chunks += 1
        if chunks in (4, 9):
            conn._rekey_time = 0.0  # "now" is past it

    down.before_chunk = expire
    server = _algs(cipher, rekey_seconds=3600)
    assert await asyncio.wait_for(down.run(server, _algs(cipher)), 120) == payload
    assert kexinits.count(True) == 1 + 2  # the first, then one per expiry
    assert len(lane) >= len(payload) // 32768 // 2


@CIPHERS
async def test_rekey_started_by_the_peer_mid_download(
    lane: list[int], monkeypatch: pytest.MonkeyPatch, cipher: str
) -> None:
    # The client starts key exchanges while the server is sending (a window
    # larger than the download: the server never waits for it): from the
    # server's KEXINIT in reply to its NEWKEYS no data may leave (the lane sees
    # the key exchange running, with nothing deferred yet), and all follows after.
    received = _client_receives(monkeypatch)
    payload = os.urandom(6 * MIB + 9)
    down = Download(payload)
    chunks = 0

    def client_rekeys(conn: Any) -> None:
        nonlocal chunks
        chunks += 1
        if chunks in (3, 9, 15):
            client = down.client_conn
            client._rekey_time = 0.0  # due: its next packet starts a key exchange
            client.send_packet(MSG_IGNORE, String(b""))

    down.before_chunk = client_rekeys
    client = _algs(cipher, rekey_seconds=3600)
    got = await asyncio.wait_for(down.run(_algs(cipher), client, window=16 * MIB), 120)
    assert got == payload
    assert received.count(MSG_KEXINIT) >= 1 + 2  # one may fall inside another
    _no_data_inside_a_key_exchange(received)
    assert len(lane) >= len(payload) // 32768 // 2


@pytest.mark.parametrize(
    "algs",
    [
        _algs("aes128-ctr", mac_algs=["hmac-sha2-256-etm@openssh.com"]),
        _algs(compression="zlib"),
        _algs(CHACHA, compression="zlib@openssh.com", rekey_bytes=MIB),
    ],
    ids=["aes-ctr", "zlib", "chacha20-zlib-delayed-rekey"],
)
async def test_other_transports_go_around_the_lane(lane: list[int], algs: dict[str, Any]) -> None:
    payload = os.urandom(3 * MIB + 7)
    assert await asyncio.wait_for(Download(payload).run(algs, algs), 120) == payload
    assert lane == []


@CIPHERS
async def test_packet_logging_goes_around_the_lane(
    lane: list[int], monkeypatch: pytest.MonkeyPatch, cipher: str
) -> None:
    monkeypatch.setattr(SSHLogger, "_debug_level", 3)
    payload = os.urandom(200 * 1024)
    algs = _algs(cipher)
    assert await asyncio.wait_for(Download(payload).run(algs, algs), 120) == payload
    assert lane == []


async def test_send_packet_wrapped_after_apply_sees_every_packet(
    lane: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    send_packet = SSHConnection.send_packet

    def spy(self: SSHConnection, pkttype: int, *args: bytes, **kw: Any) -> None:
        seen.append(pkttype)
        send_packet(self, pkttype, *args, **kw)

    monkeypatch.setattr(SSHConnection, "send_packet", spy)
    payload = os.urandom(MIB + 1)
    assert await asyncio.wait_for(Download(payload).run(_algs(), _algs()), 120) == payload
    assert lane == [] and seen.count(MSG_CHANNEL_DATA) >= MIB // 32768


@CIPHERS
async def test_revert_takes_the_lane_off(lane: list[int], cipher: str) -> None:
    payload = os.urandom(MIB + 3)
    algs = _algs(cipher)
    try:
        tuning.revert()
        assert (
            SSHChannel.__dict__["_flush_send_buf"]
            is sendlane.ORIGINALS["SSHChannel._flush_send_buf"]
        )
        assert await asyncio.wait_for(Download(payload).run(algs, algs), 120) == payload
        assert lane == []
    finally:
        tuning.apply()
    assert SSHChannel.__dict__["_flush_send_buf"] is sendlane._flush_send_buf
    assert await asyncio.wait_for(Download(payload).run(algs, algs), 120) == payload
    assert lane


@CIPHERS
async def test_peer_gone_mid_write(lane: list[int], cipher: str) -> None:
    # The client drops the connection after 1 MiB of a 64 MiB download: the
    # server's writer fails or finishes, nothing hangs, the connection closes.
    payload = os.urandom(64 * MIB)
    down = Download(payload)
    async with down.listening(_algs(cipher)) as (port, client_key):
        conn = await asyncssh.connect(
            "127.0.0.1",
            port,
            known_hosts=None,
            client_keys=[client_key],
            username="u",
            **_algs(cipher),
        )
        process = await conn.create_process(encoding=None)
        got = b""
        while len(got) < MIB:
            got += await process.stdout.read(65536)
        conn.abort()
        await asyncio.wait_for(down.finished.wait(), 60)
        (srv,) = down.server_conns
        await asyncio.wait_for(srv.wait_closed(), 60)
        assert payload.startswith(got)
        assert lane  # it was sending through the lane when the peer went
        assert srv._transport is None


# -- scp's download chunks handed over to the channel, not copied by write() -------------


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every SSHChannel.write (the spy stands for asyncssh's write)."""
    seen: list[int] = []
    write = SSHChannel.write

    def spy(self: Any, data: Any, datatype: Any = None) -> None:
        seen.append(len(data))
        write(self, data, datatype)

    monkeypatch.setattr(SSHChannel, "write", spy)
    monkeypatch.setattr(sendlane, "_chan_write", spy)
    return seen


@CIPHERS
@pytest.mark.parametrize(("window", "pktsize"), [(2 * MIB, 32768), (50_000, 7_000)])
async def test_handed_over_chunks_skip_write(
    lane: list[int], writes: list[int], window: int, pktsize: int, cipher: str
) -> None:
    payload = os.urandom(3 * MIB + 11)
    down = Download(payload, handover=True)
    server = _algs(cipher, rekey_bytes=MIB)
    got = await asyncio.wait_for(
        down.run(server, _algs(cipher), window=window, max_pktsize=pktsize), 120
    )
    assert got == payload
    assert writes == []  # every chunk queued as it was, no copy


@pytest.mark.parametrize("case", ["debug2", "reverted"])
async def test_handed_over_chunks_written_when_unusual(
    lane: list[int], writes: list[int], monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    # asyncssh's debug log at level 2 logs each write; asyncssh's own flush
    # changes a queued buffer in place, so it gets a copy of its own.
    payload = os.urandom(MIB + 5)
    if case == "debug2":
        monkeypatch.setattr(SSHLogger, "_debug_level", 2)
    try:
        if case == "reverted":
            tuning.revert()
        got = await asyncio.wait_for(Download(payload, handover=True).run(_algs(), _algs()), 120)
    finally:
        tuning.apply()
    assert got == payload
    assert sum(writes) >= len(payload)
