"""Real OpenSSH scp and sftp through the gateway under chacha20-poly1305 (change 14).

The cipher stock OpenSSH clients negotiate with Conduit. Up and down, scp in
both protocols and sftp, rekeying every MiB, byte for byte; the packets were
sealed and opened by :mod:`conduit._asyncssh.chacha`'s methods (counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asyncssh.crypto.chacha import ChachaCipher

from conduit._asyncssh import chacha
from tests.support.gateway import RunningGateway, random_file, sha256

CHACHA = ("-c", "chacha20-poly1305@openssh.com", "-o", "RekeyLimit=1M", "-v")


@pytest.fixture
def ours(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many packets this module's methods sealed and opened in the gateway."""
    calls = {"encrypt_and_sign": 0, "verify_and_decrypt": 0}
    for name in calls:
        installed = ChachaCipher.__dict__[name]
        assert installed is chacha.PATCHES[f"ChachaCipher.{name}"][2]

        def spy(self: Any, *args: Any, _name: str = name, _installed: Any = installed) -> Any:
            calls[_name] += 1
            return _installed(self, *args)

        monkeypatch.setattr(ChachaCipher, name, spy)
    return calls


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-scp"])
def test_scp_up_and_down_rekeying(
    gw: RunningGateway, tmp_path: Path, legacy: bool, ours: dict[str, int]
) -> None:
    up = random_file(tmp_path / "up.bin", 6 * 1024 * 1024 + 3)
    result = gw.scp(str(up), ":/inbox/up.bin", legacy=legacy, extra=CHACHA)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "chacha20-poly1305@openssh.com" in result.stderr
    assert result.stderr.count("SSH2_MSG_NEWKEYS received") >= 2  # it did rekey
    assert sha256(gw.area("inbox") / "up.bin") == sha256(up)
    assert ours["verify_and_decrypt"] > 6 * 1024 // 32  # its 32 KiB packets, opened here

    down = tmp_path / "down.bin"
    sealed = ours["encrypt_and_sign"]
    result = gw.scp(":/inbox/up.bin", str(down), legacy=legacy, extra=CHACHA)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("SSH2_MSG_NEWKEYS received") >= 2
    assert sha256(down) == sha256(up)
    assert ours["encrypt_and_sign"] - sealed > 6 * 1024 // 32  # sealed here


def test_sftp_up_and_down_rekeying(
    gw: RunningGateway, tmp_path: Path, ours: dict[str, int]
) -> None:
    up = random_file(tmp_path / "up.bin", 5 * 1024 * 1024 + 77)
    down = tmp_path / "down.bin"
    result = gw.sftp(f"put {up} /inbox/s.bin\nget /inbox/s.bin {down}\n", extra=CHACHA)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "chacha20-poly1305@openssh.com" in result.stderr
    assert result.stderr.count("SSH2_MSG_NEWKEYS received") >= 4  # rekeyed both ways
    assert sha256(gw.area("inbox") / "s.bin") == sha256(up)
    assert sha256(down) == sha256(up)
    assert min(ours.values()) > 5 * 1024 // 32
