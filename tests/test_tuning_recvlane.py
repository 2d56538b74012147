"""conduit._asyncssh.recvlane: channel data received without asyncssh's generic path.

The lane is checked to be in effect (the packet count through asyncssh's
generic ``_recv_packet`` drops from one per packet to the handful of control
packets: fails on the code before it), to keep the bytes and the sequence
numbers exact both ways (small windows and packets, a rekey every MiB, asyncssh
and OpenSSH peers), and to refuse whatever asyncssh refuses, with asyncssh's
own disconnect: each hostile peer below is run against the lane and against
asyncssh's own receive loop, and both must end the same way.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.channel import SSHClientChannel, SSHServerChannel, SSHTunTapChannel
from asyncssh.connection import SSHConnection
from asyncssh.constants import (
    MSG_CHANNEL_CLOSE,
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EOF,
    MSG_CHANNEL_EXTENDED_DATA,
)
from asyncssh.crypto.chacha import ChachaCipher
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from asyncssh.packet import String, UInt32, UInt64

from conduit._asyncssh import recvlane, tuning
from tests.test_tuning import echo_over_ssh, echo_server

GCM = "aes128-gcm@openssh.com"
CHACHA = "chacha20-poly1305@openssh.com"
#: The lane's two ciphers (AES-GCM: run-time change 11; ChaCha20-Poly1305: 15).
CIPHERS = pytest.mark.parametrize("cipher", [GCM, CHACHA], ids=["gcm", "chacha20"])


@pytest.fixture
def tuned() -> Iterator[None]:
    tuning.apply()
    yield
    tuning.apply()  # the rest of the session runs tuned, as the gateway does


@pytest.fixture
def generic_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many packets asyncssh's generic _recv_packet handled."""
    count = [0]
    original = SSHConnection._recv_packet

    def spy(self: SSHConnection) -> bool:
        count[0] += 1
        return original(self)

    monkeypatch.setattr(SSHConnection, "_recv_packet", spy)
    return count


def test_installed_and_reverted() -> None:
    tuning.apply()
    assert SSHConnection.__dict__["_recv_data"] is recvlane._recv_data
    try:
        tuning.revert()
        assert (
            SSHConnection.__dict__["_recv_data"] is recvlane.ORIGINALS["SSHConnection._recv_data"]
        )
        tuning.revert()  # idempotent
        assert (
            SSHConnection.__dict__["_recv_data"] is recvlane.ORIGINALS["SSHConnection._recv_data"]
        )
    finally:
        tuning.apply()
    assert SSHConnection.__dict__["_recv_data"] is recvlane._recv_data


def test_channels_that_override_go_the_generic_way() -> None:
    assert recvlane._lane_channel(SSHServerChannel)
    assert recvlane._lane_channel(SSHClientChannel)
    assert not recvlane._lane_channel(SSHTunTapChannel)  # its own _accept_data

    class Own(SSHServerChannel[bytes]):
        def _deliver_data(self, data: bytes, datatype: Any) -> None:
            pass

    assert not recvlane._lane_channel(Own)


# -- byte exact, both ways, with the lane counted ---------------------------------------


@CIPHERS
@pytest.mark.parametrize(("window", "pktsize"), [(50_000, 7_000), (2_000_000, 32_768)])
async def test_round_trip_through_the_lane(
    tuned: None, generic_count: list[int], window: int, pktsize: int, cipher: str
) -> None:
    # Both ends are this process: the server receives the upload and the
    # client the echo (and the window adjusts, each way) through the lane.
    payload = os.urandom(3 * 1024 * 1024 + 333)
    kexinits = _count_calls("_send_kexinit")
    both = {"encryption_algs": [cipher], "rekey_bytes": 1024 * 1024}
    echoed = await asyncio.wait_for(
        echo_over_ssh(payload, both, window=window, max_pktsize=pktsize), 60
    )
    assert echoed == payload
    assert kexinits[0] >= 6  # rekeyed every MiB, each way
    data_packets = 2 * len(payload) // pktsize
    # Left to the generic path: key exchanges (~4 packets each), auth, channel
    # open/requests/EOF/close; asyncssh's own path takes every data packet too.
    assert generic_count[0] < 100 < data_packets, (generic_count[0], data_packets)


@CIPHERS
@pytest.mark.parametrize("off", ["uninstall", "revert"])
async def test_lane_off_takes_the_generic_path(
    generic_count: list[int], cipher: str, off: str
) -> None:
    if off == "revert":
        tuning.revert()  # asyncssh's own path, every change off
    else:
        recvlane.uninstall()
    try:
        payload = os.urandom(512 * 1024)
        both = {"encryption_algs": [cipher]}
        assert await echo_over_ssh(payload, both, max_pktsize=32768) == payload
        assert generic_count[0] > 2 * len(payload) // 32768
    finally:
        tuning.apply()


@CIPHERS
@pytest.mark.parametrize("lane", [True, False], ids=["lane", "asyncssh"])
async def test_sequence_numbers_agree(lane: bool, cipher: str) -> None:
    # What the server counted received equals what the client counted sent,
    # across rekeys (strict kex resets them at NEWKEYS), with and without the lane.
    tuning.apply()
    if not lane:
        recvlane.uninstall()
    try:
        async with _pair(cipher, rekey_bytes=256 * 1024) as (client, server, chan):
            for _ in range(40):
                chan.write(os.urandom(40_000))
            await _settle(server, 40 * 40_000)
            assert server._recv_seq == client._send_seq
            assert client._recv_seq == server._send_seq
            assert client._strict_kex and server._strict_kex
    finally:
        tuning.apply()


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "asyncssh"])
async def test_chacha_length_decrypted_once_per_packet(
    lane: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's socket hands it 32 KiB packets in pieces of 1000 bytes: the
    # lane waits for each whole packet and decrypts its length once, as asyncssh
    # does (not once per piece).
    tuning.apply()
    if not lane:
        recvlane.uninstall()
    # Whichever decrypt_header is installed (asyncssh's, or a faster one applied
    # with the rest), counted.
    calls: list[Any] = []
    decrypt_header = ChachaCipher.decrypt_header

    def counted(self: Any, header: Any, nonce: Any) -> bytes:
        calls.append(self)
        return decrypt_header(self, header, nonce)

    monkeypatch.setattr(ChachaCipher, "decrypt_header", counted)
    try:
        async with _pair(CHACHA) as (_, server, chan):
            received = server.data_received

            def in_pieces(data: bytes, datatype: Any = None) -> None:
                for at in range(0, len(data), 1000):
                    received(data[at : at + 1000])

            server.data_received = in_pieces
            seq, cipher = server._recv_seq, server._recv_encryption._cipher
            del calls[:]
            payload = os.urandom(20 * 40_000)
            chan.write(payload)
            await _settle(server, len(payload))
            assert b"".join(server.received) == payload
            packets = server._recv_seq - seq
            assert packets >= len(payload) // 32768
            assert calls.count(cipher) == packets
    finally:
        tuning.apply()


# -- OpenSSH's client up and down through the lane ----------------------------------------


@pytest.mark.parametrize("cipher", [GCM, "aes256-gcm@openssh.com", CHACHA])
async def test_openssh_round_trip_rekeying(
    tuned: None, generic_count: list[int], tmp_path: Path, cipher: str
) -> None:
    payload = os.urandom(6 * 1024 * 1024 + 7)
    async with echo_server(encryption_algs=[cipher], line_editor=False) as (port, client_key):
        key_file = tmp_path / "id"
        client_key.write_private_key(str(key_file))
        key_file.chmod(0o600)
        proc = await asyncio.create_subprocess_exec(
            *("ssh", "-T", "-p", str(port), "-i", str(key_file), "-c", cipher),
            *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
            *("-o", "RekeyLimit=1M", "-o", "BatchMode=yes", "-v", "u@127.0.0.1", "cat"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(payload), 120)
    assert proc.returncode == 0, err[-2000:]
    assert err.count(b"SSH2_MSG_NEWKEYS received") >= 6  # it did rekey, many times
    assert out == payload
    assert generic_count[0] < 100 < len(payload) // 32768  # its 32 KiB packets: the lane


# -- hostile peers: refused as asyncssh refuses them -------------------------------------

Misdeed = Callable[[SSHConnection, Any], Awaitable[None]]


async def _overrun(conn: SSHConnection, chan: Any) -> None:
    # Two packets inside the window each, the second beyond what is left of it
    # (the session has not read the first: the window was not adjusted).
    for _ in range(2):
        conn.send_packet(MSG_CHANNEL_DATA, UInt32(chan._send_chan), String(b"x" * 3000))


async def _one_overrun(conn: SSHConnection, chan: Any) -> None:
    conn.send_packet(MSG_CHANNEL_DATA, UInt32(chan._send_chan), String(b"x" * 5000))


async def _unknown_channel(conn: SSHConnection, chan: Any) -> None:
    conn.send_packet(MSG_CHANNEL_DATA, UInt32(77), String(b"x"))


async def _after_eof(conn: SSHConnection, chan: Any) -> None:
    conn.send_packet(MSG_CHANNEL_EOF, UInt32(chan._send_chan))
    conn.send_packet(MSG_CHANNEL_DATA, UInt32(chan._send_chan), String(b"x"))


async def _after_close(conn: SSHConnection, chan: Any) -> None:
    conn.send_packet(MSG_CHANNEL_CLOSE, UInt32(chan._send_chan))
    conn.send_packet(MSG_CHANNEL_DATA, UInt32(chan._send_chan), String(b"x"))


async def _trailing(conn: SSHConnection, chan: Any) -> None:
    conn.send_packet(MSG_CHANNEL_DATA, UInt32(chan._send_chan), String(b"x"), b"junk")


async def _short(conn: SSHConnection, chan: Any) -> None:
    conn.send_packet(MSG_CHANNEL_DATA, UInt32(chan._send_chan), UInt32(10), b"x")


async def _extended(conn: SSHConnection, chan: Any) -> None:
    conn.send_packet(MSG_CHANNEL_EXTENDED_DATA, UInt32(chan._send_chan), UInt32(1), String(b"x"))


def _tamper(edit: Callable[[bytearray, Any, int], None]) -> Misdeed:
    """A data packet changed by ``edit(packet, conn, seq)`` on its way out."""

    async def misdeed(conn: SSHConnection, chan: Any) -> None:
        send = conn._send

        def tampered(data: bytes) -> None:
            packet = bytearray(data)
            edit(packet, conn, conn._send_seq)  # still this packet's number
            conn._send = send  # type: ignore[method-assign]
            send(bytes(packet))

        conn._send = tampered  # type: ignore[method-assign]
        conn.send_packet(MSG_CHANNEL_DATA, UInt32(chan._send_chan), String(b"x" * 100))

    return misdeed


def _send_sealed(conn: Any, body: bytes, seq_offset: int = 0, length_right: bool = False) -> None:
    """``body`` (padding length, payload, padding) sent as one packet sealed
    correctly under the client's keys; ChaCha20's nonce ``seq_offset`` off the
    sequence number the server expects (``length_right``: but not the length's)."""
    header = UInt32(len(body))
    enc = conn._send_encryption
    cipher = enc._cipher
    if isinstance(enc, GCMEncryption):
        conn._send(header + cipher._aesgcm.encrypt(cipher._iv, body, header))
        cipher._update_iv()
    else:
        nonce = UInt64((conn._send_seq + seq_offset) & 0xFFFFFFFF)
        sealed, tag = cipher.encrypt_and_sign(header, body, nonce)
        if length_right:
            sealed = cipher.decrypt_header(header, UInt64(conn._send_seq)) + sealed[4:]
        conn._send(sealed + tag)
    conn._send_seq += 1


def _sealed(
    payload: bytes, padbyte: int, padding: int, seq_offset: int = 0, length_right: bool = False
) -> Misdeed:
    """A packet sealed correctly under the client's keys, its padding length
    byte ``padbyte`` and ``padding`` bytes of padding (which the client would
    never choose)."""

    async def misdeed(conn: SSHConnection, chan: Any) -> None:
        payload_ = payload.replace(b"CHAN", UInt32(chan._send_chan))
        body = bytes([padbyte]) + payload_ + bytes(padding)
        _send_sealed(conn, body, seq_offset, length_right)

    return misdeed


_DATA = bytes([MSG_CHANNEL_DATA]) + b"CHAN" + String(b"x" * 7)
_EOF = bytes([MSG_CHANNEL_EOF]) + b"CHAN"


async def _empty(conn: SSHConnection, chan: Any) -> None:
    """A packet of length 0, sealed correctly: nothing at all to decrypt (not
    even the padding length byte)."""
    _send_sealed(conn, b"")


async def _under_four(conn: SSHConnection, chan: Any) -> None:
    """A packet of length 2, sealed correctly (asyncssh slices a packet shorter
    than its first block its own way)."""
    _send_sealed(conn, b"\x01\x00")


def _flip_body(packet: bytearray, conn: Any, seq: int) -> None:
    packet[20] ^= 1


def _flip_tag(packet: bytearray, conn: Any, seq: int) -> None:
    packet[-1] ^= 1


def _flip_length_high_bit(packet: bytearray, conn: Any, seq: int) -> None:
    # In clear (GCM) or encrypted with a stream cipher (ChaCha20): either way the
    # length the server reads gets its top bit, 2 GiB more.
    packet[0] ^= 0x80


def _huge_length(packet: bytearray, conn: Any, seq: int) -> None:
    length = (0x7FFFFFF0).to_bytes(4, "big")
    enc = conn._send_encryption
    if isinstance(enc, ChachaEncryption):
        # Encrypted as the sender would (a stream cipher: decrypting is encrypting).
        length = enc._cipher.decrypt_header(length, UInt64(seq))
    packet[0:4] = length


MISDEEDS: dict[str, Misdeed] = {
    "window-overrun": _overrun,
    "one-packet-over-window": _one_overrun,
    "unknown-channel": _unknown_channel,
    "data-after-eof": _after_eof,
    "data-after-close": _after_close,
    "trailing-bytes": _trailing,
    "short-data": _short,
    "extended-data": _extended,
    "tampered-body": _tamper(_flip_body),
    "tampered-tag": _tamper(_flip_tag),
    "tampered-length": _tamper(_flip_length_high_bit),
    "length-over-limit": _tamper(_huge_length),
    "no-padding": _sealed(_DATA, 0, 0),
    "padding-byte-over-padding": _sealed(_DATA, 8, 4),
    "short-padding": _sealed(_DATA, 1, 1),  # under 4: asyncssh accepts it, so must the lane
    "empty-packet": _empty,
    "length-under-4": _under_four,
    # 8 bytes: shorter than any packet the lane takes, asyncssh's to handle.
    "short-eof": _sealed(_EOF, 2, 2),
}
#: ChaCha20 only: its nonce is the sequence number (GCM's IV is not).
CHACHA_MISDEEDS: dict[str, Misdeed] = {
    "nonce-of-next-packet": _sealed(_DATA, 4, 4, seq_offset=1),
    "nonce-of-last-packet": _sealed(_DATA, 4, 4, seq_offset=-1),
    # The length right, the body and tag under the next packet's nonce: the tag fails.
    "body-under-next-nonce": _sealed(_DATA, 4, 4, seq_offset=1, length_right=True),
}
#: Misdeeds asyncssh lets pass (the connection stays up): bytes the session got.
TOLERATED = {"short-padding": 7, "short-eof": 0}


# A session that reads adjusts the window before the overrun's second packet:
# that one is run against a paused session only.
CASES = [
    pytest.param(name, paused, cipher, id=f"{name}-{'paused' if paused else 'reading'}-{short}")
    for cipher, short in ((GCM, "gcm"), (CHACHA, "chacha20"))
    for name in sorted(MISDEEDS if cipher == GCM else {**MISDEEDS, **CHACHA_MISDEEDS})
    for paused in (False, True)
    if paused or name != "window-overrun"
]


@pytest.mark.parametrize(("name", "paused", "cipher"), CASES)
async def test_hostile_peer_refused_as_asyncssh_does(name: str, paused: bool, cipher: str) -> None:
    misdeed = {**MISDEEDS, **CHACHA_MISDEEDS}[name]
    tuning.apply()
    with_lane = await asyncio.wait_for(_refusal(misdeed, paused, cipher), 30)
    recvlane.uninstall()
    try:
        without = await asyncio.wait_for(_refusal(misdeed, paused, cipher), 30)
    finally:
        tuning.apply()
    assert with_lane == without
    code, reason, accepted = with_lane
    if name in TOLERATED:
        assert code is None and accepted == TOLERATED[name], with_lane
    elif name != "length-under-4":  # asyncssh may wait for bytes that never come
        assert code is not None, reason  # the server disconnected
    assert accepted <= 4096  # never more than the window


async def _refusal(misdeed: Misdeed, paused: bool, cipher: str) -> tuple[int | None, str, int]:
    """What the client is told when it does ``misdeed`` (disconnect code and
    reason), and how many bytes the server's channel accepted."""
    async with _pair(cipher, window=4096, paused=paused) as (client, server, chan):
        await asyncio.sleep(0)
        await misdeed(client, chan)
        try:
            await asyncio.wait_for(client.wait_closed(), 2)
        except TimeoutError:
            await asyncio.sleep(0.1)  # still up: what the session was given counts
        exc = client.lost
    accepted = sum(len(d) for d in server.received) + sum(
        len(d) for c in server.channels for d, _ in c._recv_buf
    )
    if isinstance(exc, asyncssh.DisconnectError):
        return exc.code, exc.reason, accepted
    return None, repr(exc), accepted  # None: the connection stayed up


# -- helpers -------------------------------------------------------------------------------


def _count_calls(name: str) -> list[int]:
    count = [0]
    original = getattr(SSHConnection, name)

    def spy(self: Any, *args: Any) -> Any:
        count[0] += 1
        return original(self, *args)

    setattr(SSHConnection, name, spy)
    _restore.append((name, original))
    return count


_restore: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _restore_spies() -> Iterator[None]:
    yield
    while _restore:
        name, original = _restore.pop()
        setattr(SSHConnection, name, original)


class _Sink(asyncssh.SSHServerSession[bytes]):
    """Keeps the channel open whatever arrives; records what it is given
    (paused by the test: reads nothing, so the window is never adjusted)."""

    def __init__(self, received: list[bytes], channels: list[Any]) -> None:
        self._received = received
        self._channels = channels

    def connection_made(self, chan: Any) -> None:
        self._channels.append(chan)

    def shell_requested(self) -> bool:
        return True

    def data_received(self, data: bytes, datatype: Any) -> None:
        self._received.append(data)

    def eof_received(self) -> bool:
        return True


class _Server(asyncssh.SSHServer):
    conn: Any = None

    def connection_made(self, conn: Any) -> None:
        type(self).conn = conn
        conn.received = []
        conn.channels = []

    def session_requested(self) -> _Sink:
        conn = type(self).conn
        return _Sink(conn.received, conn.channels)


class _Client(asyncssh.SSHClient):
    def connection_made(self, conn: Any) -> None:
        self._conn = conn
        conn.lost = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.lost = exc


class _pair:
    """An asyncssh server (its sessions sink data) and a connected client with
    one open session channel: (client conn, server conn, client channel)."""

    def __init__(
        self,
        cipher: str,
        window: int = 2 * 1024 * 1024,
        rekey_bytes: int = 1 << 30,
        paused: bool = False,
    ) -> None:
        self.cipher = cipher
        self.window = window
        self.rekey_bytes = rekey_bytes
        self.paused = paused

    async def __aenter__(self) -> tuple[Any, Any, Any]:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            server_factory=_Server,
            authorized_client_keys=asyncssh.import_authorized_keys(
                client_key.export_public_key().decode()
            ),
            encoding=None,
            window=self.window,
            encryption_algs=[self.cipher],
            rekey_bytes=self.rekey_bytes,
            line_editor=False,
        )
        port = self.server.sockets[0].getsockname()[1]
        self.client, _ = await asyncssh.create_connection(
            _Client,
            "127.0.0.1",
            port,
            known_hosts=None,
            client_keys=[client_key],
            username="u",
            encryption_algs=[self.cipher],
            rekey_bytes=self.rekey_bytes,
        )
        chan, _ = await self.client.create_session(asyncssh.SSHClientSession, encoding=None)
        server_conn = _Server.conn
        assert server_conn is not None
        for _ in range(100):  # the server's session started (and reading)
            if server_conn.channels and server_conn.channels[0]._session is not None:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        if self.paused:
            server_conn.channels[0].pause_reading()
        return self.client, server_conn, chan

    async def __aexit__(self, *exc: object) -> None:
        self.client.close()
        await self.client.wait_closed()
        self.server.close()
        await self.server.wait_closed()


async def _settle(server: Any, total: int) -> None:
    for _ in range(500):
        if sum(len(d) for d in server.received) >= total:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the window adjusts back, too
