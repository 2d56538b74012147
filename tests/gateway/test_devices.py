"""The gateway as jump host: real scp/sftp clients reach real sshd 'devices' through /devices.

One device speaks SFTP, one only legacy SCP (no SFTP subsystem at all). The
engineer never holds the device key; the gateway does. Every case checks the
device's disk, not just the client's exit code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.storage.relay.sshd import Sshd, keygen, start_sshd
from tests.support.gateway import RunningGateway, random_file, sha256, wait_for


@dataclass
class Fleet:
    identity: Path
    sftp: Sshd
    scp: Sshd
    roots: dict[str, Path]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("fleet")
    identity = base / "gateway_device_key"
    pub = keygen(identity, "conduit-gateway")
    sftp = start_sshd(base / "sftp", client_keys=[pub], sftp=True)
    scp = start_sshd(base / "scp", client_keys=[pub], sftp=False)
    roots = {"plc-sftp": base / "root-sftp", "plc-scp": base / "root-scp"}
    for root in roots.values():
        root.mkdir()
    yield Fleet(identity, sftp, scp, roots)
    sftp.stop()
    scp.stop()


def fleet_policy(
    root: Path,
    keys: dict[str, Path],
    fleet: Fleet,
    *,
    sftp_key: str | None = None,
    scp_address: str | None = None,
) -> str:
    def pub(name: str) -> str:
        return keys[name].with_suffix(".pub").read_text().strip()

    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{root}/data"

[zones.engineering]
level = 3
networks = ["127.0.0.0/8"]
[zones.control]
level = 1
networks = []

[devices.plc-sftp]
zone = "control"
address = "{fleet.sftp.address}"
user = "root"
identity = "{fleet.identity}"
host_key = "{sftp_key or fleet.sftp.host_key}"
protocols = ["sftp"]
root = "{fleet.roots["plc-sftp"]}"
connect_timeout = 3

[devices.plc-scp]
zone = "control"
address = "{scp_address or fleet.scp.address}"
user = "root"
identity = "{fleet.identity}"
host_key = "{fleet.scp.host_key}"
protocols = ["scp"]
root = "{fleet.roots["plc-scp"]}"
connect_timeout = 3

[roles.engineer]
grants = [{{ target = "devices/plc-*", ops = ["list", "read", "write"] }}]

[users.alice]
keys = ["{pub("alice")}"]
roles = ["engineer"]

[users.bob]
keys = ["{pub("bob")}"]
roles = []

[[conduits]]
name = "to-plcs"
from = "engineering"
to = "control"
paths = ["*.bin", "*.cfg", "*id*", "*touch*"]

[[conduits]]
name = "from-plcs"
from = "control"
to = "engineering"
"""


@pytest.fixture
def relay(make_gateway, keys: dict[str, Path], fleet: Fleet, tmp_path: Path) -> RunningGateway:  # type: ignore[no-untyped-def]
    root = tmp_path / "relay"
    root.mkdir()
    for device_root in fleet.roots.values():
        for entry in device_root.iterdir():
            entry.unlink()
    return make_gateway(text=fleet_policy(root, keys, fleet))


@pytest.mark.parametrize("device", ["plc-sftp", "plc-scp"])
def test_upload_lands_on_device_with_custody(
    relay: RunningGateway, fleet: Fleet, legacy: bool, device: str, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "fw.bin", 2 * 1024 * 1024 + 5)
    result = relay.scp(str(src), f":/devices/{device}/fw.bin", legacy=legacy)
    assert result.returncode == 0, result.stderr
    assert sha256(fleet.roots[device] / "fw.bin") == sha256(src)
    assert os.listdir(fleet.roots[device]) == ["fw.bin"]  # no temp file left on the device
    (event,) = relay.recorder.of("file.upload", "success")
    assert event["device"] == device and event["sha256"] == sha256(src)
    assert event["device_sha256"] == sha256(src)  # what the device holds, verified
    # The gateway's connection to the device is journalled with what it agreed on.
    (connect,) = [e for e in relay.recorder.of("device.connect") if e["device"] == device]
    assert connect["address"] == relay.config.devices[device].address
    assert connect["kex"] == "curve25519-sha256"  # first shared (OpenSSH 9.2 has no ML-KEM)
    assert connect["host_key_algorithm"] == "ssh-ed25519"
    assert connect["cipher"] == "aes128-gcm@openssh.com" and connect["mac"] is None


@pytest.mark.parametrize("device", ["plc-sftp", "plc-scp"])
def test_download_from_device(
    relay: RunningGateway, fleet: Fleet, legacy: bool, device: str, tmp_path: Path
) -> None:
    src = random_file(fleet.roots[device] / "running.cfg", 300_000)
    dst = tmp_path / "running.cfg"
    result = relay.scp(f":/devices/{device}/running.cfg", str(dst), legacy=legacy)
    assert result.returncode == 0, result.stderr
    assert sha256(dst) == sha256(src)
    # The recorded hash is of the bytes served (lent by the SFTP relay, off the loop).
    (event,) = wait_for(lambda: relay.recorder.of("file.download", "success"), timeout=10)
    assert event["sha256"] == sha256(src)


def test_devices_folder_lists_granted_devices(relay: RunningGateway) -> None:
    result = relay.sftp("ls /devices\n")
    assert result.returncode == 0, result.stderr
    assert "plc-sftp" in result.stdout and "plc-scp" in result.stdout
    assert relay.sftp("ls /devices\n", user="bob").returncode != 0


def test_listing_a_legacy_scp_device_is_not_supported(relay: RunningGateway) -> None:
    result = relay.sftp("ls /devices/plc-scp\n")
    assert result.returncode != 0
    assert relay.sftp("ls /devices/plc-sftp\n").returncode == 0


def test_user_without_grant_refused(relay: RunningGateway, fleet: Fleet, tmp_path: Path) -> None:
    src = random_file(tmp_path / "fw.bin", 1000)
    assert relay.scp(str(src), ":/devices/plc-sftp/fw.bin", user="bob").returncode != 0
    assert os.listdir(fleet.roots["plc-sftp"]) == []


def test_conduit_required_for_the_file(relay: RunningGateway, fleet: Fleet, tmp_path: Path) -> None:
    src = random_file(tmp_path / "notes.txt", 1000)
    result = relay.scp(str(src), ":/devices/plc-sftp/notes.txt", legacy=True)
    assert result.returncode != 0 and "no conduit" in result.stderr
    assert os.listdir(fleet.roots["plc-sftp"]) == []


@pytest.mark.parametrize(
    "name", ["a;touch x.bin", "$(id).bin", "`id`.bin", "sp ace 'q\".bin", "-rf.bin"]
)
def test_shell_metacharacters_land_byte_exact_and_run_nothing(
    relay: RunningGateway, fleet: Fleet, name: str, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "payload.bin", 4000)
    result = relay.scp(str(src), f":/devices/plc-scp/{name}")  # SFTP to the gateway, SCP on
    assert result.returncode == 0, result.stderr
    assert os.listdir(fleet.roots["plc-scp"]) == [name]
    assert sha256(fleet.roots["plc-scp"] / name) == sha256(src)
    assert not Path("x.bin").exists() and not (fleet.roots["plc-scp"] / "x.bin").exists()


def test_wrong_pinned_host_key_refused(
    make_gateway,
    keys: dict[str, Path],
    fleet: Fleet,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    root = tmp_path / "pinned"
    root.mkdir()
    impostor = keygen(tmp_path / "impostor").split(" ")[:2]
    gw = make_gateway(text=fleet_policy(root, keys, fleet, sftp_key=" ".join(impostor)))
    src = random_file(tmp_path / "fw.bin", 1000)
    result = gw.scp(str(src), ":/devices/plc-sftp/fw.bin", legacy=True)
    assert result.returncode != 0 and "host key" in result.stderr
    assert not (fleet.roots["plc-sftp"] / "fw.bin").exists()


def test_device_down_fails_fast(
    make_gateway,
    keys: dict[str, Path],
    fleet: Fleet,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    root = tmp_path / "down"
    root.mkdir()
    gw = make_gateway(text=fleet_policy(root, keys, fleet, scp_address=dead))
    src = random_file(tmp_path / "fw.bin", 1000)
    started = time.monotonic()
    result = gw.scp(str(src), ":/devices/plc-scp/fw.bin", legacy=True)
    assert result.returncode != 0
    assert time.monotonic() - started < 15
    assert (
        wait_for(
            lambda: gw.recorder.of("file.upload", "failed") or gw.recorder.of("access.denied"),
            timeout=5,
        )
        or "unreachable" in result.stderr.lower()
        or result.stderr
    )
