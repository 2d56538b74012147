"""Zones and conduits enforced end to end: three zones on three loopback addresses.

OpenSSH clients pick their source address with ``-o BindAddress=``; the
gateway derives each client's zone from it. Every refusal must reach the
client with its reason, be recorded, and leave the disk untouched.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from conduit.cli.main import main
from tests.support.gateway import RunningGateway, random_file, sha256, wait_for

ENTERPRISE, DMZ, CONTROL = "127.0.0.2", "127.0.0.3", "127.0.0.4"


def zones_policy(root: Path, keys: dict[str, Path]) -> str:
    def pub(name: str) -> str:
        return keys[name].with_suffix(".pub").read_text().strip()

    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%a")
    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{root}/data"

[zones.enterprise]
level = 4
networks = ["{ENTERPRISE}/32", "127.0.0.1/32"]
[zones.dmz]
level = 3.5
networks = ["{DMZ}/32"]
[zones.control]
level = 1
networks = ["{CONTROL}/32"]

[areas.firmware]
zone = "control"
path = "{root}/areas/firmware"
[areas.logs]
zone = "control"
path = "{root}/areas/logs"
[areas.staging]
zone = "control"
path = "{root}/areas/staging"

[roles.engineer]
grants = [
  {{ target = "firmware", ops = ["list", "read", "write"] }},
  {{ target = "logs", ops = ["list", "read"] }},
  {{ target = "staging", ops = ["list", "write"] }},
]

[users.alice]
keys = ["{pub("alice")}"]
roles = ["engineer"]

[users.bob]
keys = ["{pub("bob")}"]
roles = []

[[conduits]]
name = "firmware-down"
from = "enterprise"
to = "control"
paths = ["*.bin"]
max_size = "1MiB"

[[conduits]]
name = "logs-up"
from = "control"
to = "enterprise"
paths = ["*.log"]

[[conduits]]
name = "signed-packages"
from = "enterprise"
to = "control"
paths = ["*.pkg"]
require = ["signature"]

[[conduits]]
name = "staging-tomorrow"
from = "enterprise"
to = "control"
paths = ["*.img"]
window = "{tomorrow} 00:00-23:59"
"""


@pytest.fixture
def zoned(make_gateway, keys: dict[str, Path], tmp_path: Path) -> RunningGateway:  # type: ignore[no-untyped-def]
    root = tmp_path / "zoned"
    root.mkdir()
    gw = make_gateway(text=zones_policy(root, keys))
    (gw.area("logs") / "plc.log").write_text("boot ok\n")
    (gw.area("firmware") / "current.bin").write_bytes(b"firmware image\n")
    return gw


def bind(address: str) -> tuple[str, ...]:
    return ("-o", f"BindAddress={address}")


def test_allowed_upload_through_conduit(
    zoned: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "fw.bin", 500_000)
    result = zoned.scp(str(src), ":/firmware/", legacy=legacy, extra=bind(ENTERPRISE))
    assert result.returncode == 0, result.stderr
    assert sha256(zoned.area("firmware") / "fw.bin") == sha256(src)
    (event,) = zoned.recorder.of("file.upload", "success")
    assert event["zone"] == "enterprise" and "firmware-down" in str(event["rule"])


def test_allowed_download_up_the_levels(
    zoned: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    result = zoned.scp(
        ":/logs/plc.log", str(tmp_path / "plc.log"), legacy=legacy, extra=bind(ENTERPRISE)
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "plc.log").read_text() == "boot ok\n"


DENIALS = [
    # (what, user, source, direction, remote path, local size)
    ("no grant", "bob", ENTERPRISE, "up", "/firmware/fw.bin", 1000),
    ("no conduit", "alice", DMZ, "up", "/firmware/fw.bin", 1000),
    ("wrong direction", "alice", ENTERPRISE, "down", "/firmware/current.bin", 0),
    ("pattern", "alice", ENTERPRISE, "up", "/firmware/fw.txt", 1000),
    ("size", "alice", ENTERPRISE, "up", "/firmware/huge.bin", 2 * 1024 * 1024),
    ("window", "alice", ENTERPRISE, "up", "/staging/fw.img", 1000),
]


@pytest.mark.parametrize(
    ("what", "user", "source", "direction", "remote", "size"), DENIALS, ids=[d[0] for d in DENIALS]
)
def test_denied_with_reason_and_nothing_written(
    zoned: RunningGateway,
    legacy: bool,
    tmp_path: Path,
    what: str,
    user: str,
    source: str,
    direction: str,
    remote: str,
    size: int,
) -> None:
    before = {a: sorted(os.listdir(zoned.area(a))) for a in ("firmware", "logs", "staging")}
    if direction == "up":
        src = random_file(tmp_path / Path(remote).name, size)
        result = zoned.scp(str(src), f":{remote}", legacy=legacy, user=user, extra=bind(source))
    else:
        result = zoned.scp(
            f":{remote}", str(tmp_path / "got"), legacy=legacy, user=user, extra=bind(source)
        )
        assert not (tmp_path / "got").exists()
    assert result.returncode != 0, f"{what}: allowed"
    after = {a: sorted(os.listdir(zoned.area(a))) for a in ("firmware", "logs", "staging")}
    assert after == before
    assert wait_for(
        lambda: zoned.recorder.of("access.denied") or zoned.recorder.of("file.upload", "failed")
    )
    assert not zoned.recorder.of("file.upload", "success")


def test_an_obligation_sends_the_upload_to_quarantine_and_explain_agrees(
    zoned: RunningGateway, legacy: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every obligation is enforced (the gateway's checks are the policy's
    Inspector): a conduit requiring a signature takes the upload into
    quarantine, where it waits for a signature (no trust set is named here,
    so none could vouch), never under its final name; ``conduit explain``
    says the same."""
    name = f"tool-{'legacy' if legacy else 'sftp'}.pkg"
    src = random_file(tmp_path / name, 1000)
    result = zoned.scp(str(src), ":/firmware/", legacy=legacy, extra=bind(ENTERPRISE))
    assert result.returncode == 0, result.stderr  # kept in quarantine, pending
    assert not (zoned.area("firmware") / name).exists()
    (kept,) = wait_for(
        lambda: [r for r in zoned.recorder.of("file.quarantined") if r["path"].endswith(name)]
    )
    assert kept["conduit"] == "signed-packages" and kept["state"] == "pending", kept

    config = tmp_path / "conduit.toml"
    config.write_text(zones_policy(zoned.root, zoned.keys))
    argv = ["explain", "alice", "write", f"/firmware/{name}", "--from", ENTERPRISE]
    assert main([*argv, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "ALLOW" in out and "client sees: allowed into quarantine" in out, out
    assert "from trust (none: refused)" in out
