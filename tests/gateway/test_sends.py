"""Channel data in one socket write per flush (conduit._asyncssh.sends), against real peers.

The packets a channel's flush seals go to the transport in one write before
the flush returns. Hostile to that: a disconnect while packets are queued, a
reader that stops reading, one write of megabytes, a key exchange in the
middle of a transfer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from conduit._asyncssh import sends
from tests.gateway.test_devices import Fleet, fleet, fleet_policy
from tests.support.gateway import RunningGateway, random_file, sha256, wait_for

__all__ = ["fleet"]  # the device fixture, shared with test_devices

#: sends.LIMIT (256 KiB) and one more packet: what may be queued at once. A
#: literal, so that the test fails if the limit is raised or lost.
QUEUED_AT_MOST = 256 * 1024 + 64 * 1024


def _argv(gw: RunningGateway, tool: str, *args: str, user: str = "alice") -> list[str]:
    """OpenSSH ``tool`` against ``gw`` with its client log at ``INFO`` and up."""
    options = gw.ssh_options(user)
    at = options.index("LogLevel=ERROR")
    options[at - 1 : at + 1] = []  # -o LogLevel=ERROR: keep ssh's INFO messages
    port = ["-P" if tool in ("scp", "sftp") else "-p", str(gw.port)]
    return [tool, *port, *options, *args]


def test_disconnect_reason_reaches_openssh(gw: RunningGateway, tmp_path: Path) -> None:
    # The gateway sends DISCONNECT and drops its transport in the same turn
    # (asyncssh's disconnect()); the reason must still reach the client.
    wrong = [tmp_path / f"k{i}" for i in range(gw.config.gateway.limits.max_auth_tries + 1)]
    for key in wrong:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    argv = _argv(gw, "ssh", "-o", "IdentitiesOnly=yes", "alice@127.0.0.1", "true")
    at = argv.index("-i")
    argv[at : at + 2] = [a for key in wrong for a in ("-i", str(key))]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert "too many authentication failures" in result.stderr, result.stderr


def test_disconnect_while_gathering_reaches_openssh(gw: RunningGateway) -> None:
    # asyncssh drops its transport in the same call that sends DISCONNECT;
    # if packets are being gathered then, they and the DISCONNECT go out first.
    argv = _argv(gw, "sftp", "-b", "-", "alice@127.0.0.1")
    client = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        (conn,) = wait_for(lambda: _server_connections(gw), timeout=20)

        async def disconnect() -> None:
            assert sends.gather(conn)
            conn.send_debug("queued first")
            conn.disconnect(asyncssh.DISC_BY_APPLICATION, "gateway going away")
            sends.release(conn)

        gw.call(disconnect())
        _, stderr = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
    assert "gateway going away" in stderr, stderr


def test_exit_status_and_error_reach_openssh(gw: RunningGateway, tmp_path: Path) -> None:
    # An error text, the exit status and the channel close go out together.
    result = gw.scp(":/inbox/absent.bin", str(tmp_path / "x"), legacy=True)
    assert result.returncode == 1 and "absent.bin" in result.stderr
    assert not (tmp_path / "x").exists()


def _server_connections(gw: RunningGateway) -> list[Any]:
    return [c.conn for c in list(gw.gateway.connections) if c.conn is not None]


def test_stalled_reader_bounded_then_byte_exact(gw: RunningGateway, tmp_path: Path) -> None:
    # A real scp download whose client is stopped mid-transfer: the gateway
    # stops at the client's channel window, holds a bounded amount, and the
    # file arrives whole once the client runs again.
    src = random_file(gw.area("inbox") / "big.bin", 24 * 1024 * 1024)
    dst = tmp_path / "big.bin"
    argv = _argv(gw, "scp", "-q", "alice@127.0.0.1:/inbox/big.bin", str(dst))
    client = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.PIPE)
    try:
        (conn,) = wait_for(lambda: _server_connections(gw), timeout=20)

        async def send_buffer(size: int) -> None:
            sock = conn._transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

        # Loopback's socket buffers would take the whole window: keep the
        # kernel's share small so the stall reaches the transport.
        gw.call(send_buffer(16384))
        wait_for(lambda: dst.exists() and dst.stat().st_size > 1024 * 1024, timeout=20)
        os.killpg(client.pid, signal.SIGSTOP)

        def held() -> tuple[int, int]:
            async def sample() -> tuple[int, int]:
                transport = conn._transport
                buffered = transport.get_write_buffer_size() if transport else 0
                return buffered, sum(map(len, conn.__dict__.get("_conduit_sendq") or ()))

            result: tuple[int, int] = gw.call(sample())
            return result

        samples = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            samples.append(held())
            time.sleep(0.05)
        # The reader is stalled for real: the transport holds data it cannot send.
        assert max(buffered for buffered, _ in samples) > 64 * 1024
        # ... but no more than the client's window allows (OpenSSH: 2 MiB), and
        # the queue never more than its bound and one packet.
        assert max(buffered for buffered, _ in samples) < 8 * 1024 * 1024
        assert max(queued for _, queued in samples) <= QUEUED_AT_MOST
        gw.call(send_buffer(1024 * 1024))
        os.killpg(client.pid, signal.SIGCONT)
        assert client.wait(timeout=60) == 0
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGCONT)
            client.kill()
            client.wait(10)
    assert sha256(dst) == sha256(src)


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-scp"])
def test_rekey_mid_transfer_byte_exact(gw: RunningGateway, tmp_path: Path, legacy: bool) -> None:
    # OpenSSH rekeys every MiB: NEWKEYS and the first packets under the new keys
    # are queued in the same turn and must leave in that order.
    up = random_file(tmp_path / "up.bin", 6 * 1024 * 1024 + 3)
    extra = ("-o", "RekeyLimit=1M", "-v")
    result = gw.scp(str(up), ":/inbox/up.bin", legacy=legacy, extra=extra)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("SSH2_MSG_NEWKEYS received") >= 2  # it did rekey
    assert sha256(gw.area("inbox") / "up.bin") == sha256(up)
    down = tmp_path / "down.bin"
    result = gw.scp(":/inbox/up.bin", str(down), legacy=legacy, extra=extra)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("SSH2_MSG_NEWKEYS received") >= 2
    assert sha256(down) == sha256(up)


# -- an asyncssh server and client in this process (both sides coalesce) -------------------


async def _sink(process: asyncssh.SSHServerProcess[bytes]) -> None:
    conn = process.get_extra_info("connection")
    writes: list[int] = []
    transport = conn._transport
    plain = transport.write

    def counted(data: bytes) -> None:
        writes.append(len(data))
        plain(data)

    transport.write = counted
    # One callback hands the channel 3 MiB: asyncssh cuts it into packets
    # (up to the client's window) in this turn.
    process.stdout.write(b"x" * (3 * 1024 * 1024))
    await process.stdout.drain()
    process.stderr.write(f"{max(writes)} {len(writes)}\n".encode())
    process.exit(0)


async def _one_big_write() -> tuple[bytes, bytes]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        process_factory=_sink,
        authorized_client_keys=asyncssh.import_authorized_keys(
            client_key.export_public_key().decode()
        ),
        encoding=None,
    )
    try:
        port = server.sockets[0].getsockname()[1]
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, client_keys=[client_key], username="u"
        ) as conn:
            result = await conn.run(encoding=None)
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(result.stdout, bytes) and isinstance(result.stderr, bytes)
    return result.stdout, result.stderr


async def test_one_turn_coalesced_and_bounded() -> None:
    from conduit._asyncssh import tuning

    tuning.apply()
    stdout, stderr = await asyncio.wait_for(_one_big_write(), 60)
    assert stdout == b"x" * (3 * 1024 * 1024)
    largest, writes = map(int, stderr.split())
    packets = 3 * 1024 * 1024 // (32 * 1024)  # asyncssh's client: 32 KiB packets at most
    assert writes < packets / 2  # gathered: several packets per write
    assert largest <= QUEUED_AT_MOST  # bounded: written at once past the limit


# -- the relay: the gateway's own client connections to devices gather too ---------------


@pytest.fixture
def relay(make_gateway, keys: dict[str, Path], fleet: Fleet, tmp_path: Path) -> RunningGateway:  # type: ignore[no-untyped-def]
    root = tmp_path / "relay"
    root.mkdir()
    for entry in fleet.roots["plc-sftp"].iterdir():
        entry.unlink()
    return make_gateway(text=fleet_policy(root, keys, fleet))


def test_relay_both_ways_byte_exact_with_gathered_writes(
    relay: RunningGateway, fleet: Fleet, tmp_path: Path
) -> None:
    # Patched on the class: the device connection (asyncssh's client side)
    # sends its SFTP writes through the same gathered flush.
    released: list[int] = []
    plain = sends.release

    def counting(conn: Any) -> None:
        if conn.is_client():
            released.append(len(conn.__dict__.get("_conduit_sendq") or ()))
        plain(conn)

    src = random_file(tmp_path / "fw.bin", 8 * 1024 * 1024 + 11)
    sends.release = counting  # type: ignore[assignment]
    try:
        result = relay.scp(str(src), ":/devices/plc-sftp/fw.bin")
    finally:
        sends.release = plain  # type: ignore[assignment]
    assert result.returncode == 0, result.stderr
    assert sha256(fleet.roots["plc-sftp"] / "fw.bin") == sha256(src)
    assert released and max(released) > 1  # the device link gathered packets
    back = tmp_path / "back.bin"
    result = relay.scp(":/devices/plc-sftp/fw.bin", str(back), legacy=True)
    assert result.returncode == 0, result.stderr
    assert sha256(back) == sha256(src)
