"""The gateway's send path against real OpenSSH peers (tuning's send_packet copies).

What reaches a client when the gateway closes on it, when the client stops
reading, and across key exchanges: the places a change to how asyncssh's
packets reach the socket would break first (one such change, gathering a
channel flush's packets into one write, was built and measured here and not
kept: docs/asyncssh.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHConnection
from asyncssh.crypto.chacha import ChachaCipher

from conduit._asyncssh import chacha, sendlane
from tests.support.gateway import RunningGateway, random_file, sha256, wait_for


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
    # throttled (10 MB/s): unthrottled, the whole file could arrive before the stop
    argv = _argv(gw, "scp", "-q", "-l", "80000", "-c", "aes128-gcm@openssh.com")  # the lane's
    argv += ["alice@127.0.0.1:/inbox/big.bin", str(dst)]
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
        assert dst.stat().st_size < src.stat().st_size  # stopped mid-transfer

        def held() -> int:
            async def sample() -> int:
                transport = conn._transport
                return transport.get_write_buffer_size() if transport else 0

            result: int = gw.call(sample())
            return result

        samples = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            samples.append(held())
            time.sleep(0.05)
        # The reader is stalled for real: the transport holds data it cannot send.
        assert max(samples) > 64 * 1024
        # ... but no more than the client's window allows (OpenSSH: 2 MiB).
        assert max(samples) < 8 * 1024 * 1024
        gw.call(send_buffer(1024 * 1024))
        os.killpg(client.pid, signal.SIGCONT)
        assert client.wait(timeout=60) == 0
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGCONT)
            client.kill()
            client.wait(10)
    assert sha256(dst) == sha256(src)


@pytest.fixture
def lanes(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Packets sealed by the send lane, and packets the receive lane left to
    asyncssh's generic ``_recv_packet`` (one entry each)."""
    sealed: list[int] = []
    generic: list[int] = []
    padding = sendlane._padding
    monkeypatch.setattr(sendlane, "_padding", lambda n: sealed.append(n) or padding(n))
    recv_packet = SSHConnection._recv_packet

    def counted(self: SSHConnection) -> bool:
        generic.append(1)
        return recv_packet(self)

    monkeypatch.setattr(SSHConnection, "_recv_packet", counted)
    return sealed, generic


@pytest.fixture
def chacha_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Packets sealed and opened by run-time change 14's ChaCha20 methods."""
    calls = {"encrypt_and_sign": 0, "verify_and_decrypt": 0}
    for name in calls:
        installed = ChachaCipher.__dict__[name]
        assert installed is chacha.PATCHES[f"ChachaCipher.{name}"][2]

        def spy(self: Any, *args: Any, _name: str = name, _installed: Any = installed) -> Any:
            calls[_name] += 1
            return _installed(self, *args)

        monkeypatch.setattr(ChachaCipher, name, spy)
    return calls


CHACHA20 = "chacha20-poly1305@openssh.com"


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", CHACHA20], ids=["gcm", "chacha20"])
@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-scp"])
def test_rekey_mid_transfer_byte_exact(
    gw: RunningGateway,
    tmp_path: Path,
    legacy: bool,
    cipher: str,
    lanes: tuple[list[int], list[int]],
    chacha_calls: dict[str, int],
) -> None:
    # OpenSSH rekeys every MiB: NEWKEYS and the first packets under the new
    # keys must leave in that order, with the sequence numbers they were sealed with.
    # The upload's data comes through the receive lane (recvlane), the
    # download's goes through the send lane (sendlane), between rekeys, under
    # both AEAD ciphers (chacha20: OpenSSH's own first choice).
    sealed, generic = lanes
    up = random_file(tmp_path / "up.bin", 6 * 1024 * 1024 + 3)
    extra = ("-o", "RekeyLimit=1M", "-v", "-c", cipher)
    result = gw.scp(str(up), ":/inbox/up.bin", legacy=legacy, extra=extra)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("SSH2_MSG_NEWKEYS received") >= 2  # it did rekey
    assert sha256(gw.area("inbox") / "up.bin") == sha256(up)
    assert len(generic) < 150 < len(up.read_bytes()) // 32768  # the lane took the data
    assert f"cipher: {cipher}" in result.stderr
    # Under ChaCha20 its 32 KiB packets were opened by change 14's methods.
    opened = chacha_calls["verify_and_decrypt"]
    assert opened > 6 * 1024 // 32 if cipher == CHACHA20 else opened == 0
    down = tmp_path / "down.bin"
    sealed.clear()
    result = gw.scp(":/inbox/up.bin", str(down), legacy=legacy, extra=extra)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("SSH2_MSG_NEWKEYS received") >= 2
    assert sha256(down) == sha256(up)
    assert len(sealed) > 32  # most of 6 MiB in 32 KiB packets: the lane sealed them
    sealed_here = chacha_calls["encrypt_and_sign"]
    assert sealed_here > 6 * 1024 // 32 if cipher == CHACHA20 else sealed_here == 0


def test_sftp_under_chacha20_through_both_lanes(
    gw: RunningGateway,
    tmp_path: Path,
    lanes: tuple[list[int], list[int]],
    chacha_calls: dict[str, int],
) -> None:
    # OpenSSH's sftp with its default cipher, up and down byte-exact, rekeying.
    sealed, generic = lanes
    up = random_file(tmp_path / "up.bin", 5 * 1024 * 1024 + 17)
    down = tmp_path / "down.bin"
    extra = ("-o", "RekeyLimit=1M", "-c", CHACHA20)
    result = gw.sftp(f"put {up} /inbox/up.bin\nget /inbox/up.bin {down}\n", extra=extra)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sha256(gw.area("inbox") / "up.bin") == sha256(up) == sha256(down)
    assert len(sealed) > 32
    assert len(generic) < 150  # of ~160 write requests of 32 KiB and ~20 reads
    assert min(chacha_calls.values()) > 5 * 1024 // 32  # change 14 sealed and opened them


def test_scp_download_chunks_not_copied(
    gw: RunningGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Legacy scp's 255 KiB chunks go to the channel's queue as they are
    # (sendlane.HandOverWriter), not through SSHChannel.write's copy.
    appended: list[int] = []
    write = SSHChannel.write

    def spy(self: Any, data: Any, datatype: Any = None) -> None:
        appended.append(len(data))
        write(self, data, datatype)

    monkeypatch.setattr(SSHChannel, "write", spy)
    monkeypatch.setattr(sendlane, "_chan_write", spy)  # the spy stands for asyncssh's write
    src = random_file(gw.area("inbox") / "f.bin", 3 * 1024 * 1024 + 5)
    dst = tmp_path / "f.bin"
    result = gw.scp(":/inbox/f.bin", str(dst), legacy=True, extra=("-c", "aes128-gcm@openssh.com"))
    assert result.returncode == 0, result.stderr
    assert sha256(dst) == sha256(src)
    assert not [n for n in appended if n > 16 * 1024]
