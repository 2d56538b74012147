"""The receive lane (conduit._asyncssh.recvlane) under the gateway: a peer that
misbehaves mid-upload is disconnected with asyncssh's own reason, and the
upload it was sending is discarded as any interrupted upload is: nothing on
disk under any name, the journal records the failure, ``audit verify`` passes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_EOF
from asyncssh.packet import String, UInt32

from tests.gateway.test_hostile_scp import every_name, records, site, verified
from tests.support.gateway import RunningGateway, wait_for
from tests.test_tuning_recvlane import _Client, _flip_tag, _tamper, generic_count

__all__ = ["generic_count", "site"]  # the fixtures, reused
GCM = "aes256-gcm@openssh.com"
CHACHA = "chacha20-poly1305@openssh.com"  # what a stock OpenSSH client negotiates
CIPHERS = pytest.mark.parametrize("cipher", [GCM, CHACHA], ids=["gcm", "chacha20"])

_tampered = _tamper(_flip_tag)


async def _after_eof(conn: Any, chan: Any) -> None:
    conn.send_packet(MSG_CHANNEL_EOF, UInt32(chan._send_chan))
    conn.send_packet(MSG_CHANNEL_DATA, UInt32(chan._send_chan), String(b"x" * 100))


async def _unknown_channel(conn: Any, chan: Any) -> None:
    conn.send_packet(MSG_CHANNEL_DATA, UInt32(chan._send_chan + 77), String(b"x" * 100))


CASES = {
    "tampered": (_tampered, "MAC verification failed"),
    "data-after-eof": (_after_eof, "Channel not open for sending"),
    "unknown-channel": (_unknown_channel, "Invalid channel number"),
}


@CIPHERS
@pytest.mark.parametrize("case", sorted(CASES))
def test_misbehaving_peer_mid_upload(site: RunningGateway, case: str, cipher: str) -> None:
    misdeed, reason = CASES[case]

    async def scenario() -> Any:
        async with site.connect(client_factory=_Client, encryption_algs=[cipher]) as conn:
            process = await conn.create_process("scp -t /inbox", encoding=None)
            assert await process.stdout.readexactly(1) == b"\0"
            process.stdin.write(b"C0644 200000 half.bin\n")
            assert await process.stdout.readexactly(1) == b"\0"
            process.stdin.write(b"y" * 100_000)  # half the file, through the lane
            await process.stdin.drain()
            await asyncio.sleep(0.2)
            await misdeed(conn, process.channel)
            await asyncio.wait_for(conn.wait_closed(), 20)
            return conn.lost

    lost = site.call(scenario(), timeout=60)
    assert isinstance(lost, asyncssh.DisconnectError), lost
    assert reason in lost.reason
    assert wait_for(lambda: every_name(site.area("inbox")) == [], timeout=10)
    failed = wait_for(
        lambda: [
            r for r in records(site) if r["type"] == "file.upload" and r["outcome"] == "failed"
        ],
        timeout=10,
    )
    assert len(failed) == 1 and failed[0]["path"].endswith("half.bin")
    assert verified(site)


@CIPHERS
@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-scp"])
def test_upload_through_the_lane_byte_exact(
    site: RunningGateway, tmp_path: Path, generic_count: list[int], legacy: bool, cipher: str
) -> None:
    # A real scp upload in 32 KiB packets, rekeying every MiB: the lane's bytes
    # are the file's, and the journal's record agrees.
    data = bytes(range(256)) * 24_577  # 6 MiB and a bit: 193 packets of 32 KiB
    src = tmp_path / "up.bin"
    src.write_bytes(data)
    extra = ("-c", cipher, "-o", "RekeyLimit=1M")
    result = site.scp(str(src), ":/inbox/up.bin", legacy=legacy, extra=extra)
    assert result.returncode == 0, result.stderr[-2000:]
    # The data packets took the lane; key exchanges, auth and requests did not.
    assert generic_count[0] < 100 < len(data) // 32768, generic_count
    assert (site.area("inbox") / "up.bin").read_bytes() == data
    done = [r for r in records(site) if r["type"] == "file.upload" and r["outcome"] == "success"]
    assert len(done) == 1 and done[0]["bytes"] == len(data)
    assert verified(site)
