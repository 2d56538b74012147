"""A device the gateway cannot reach: journalled with its cause, on the console,
and told to real scp/sftp clients by the closest SFTP status and its reason.

Real sshd devices (tests/storage/relay/sshd.py), real OpenSSH clients, the real
journal and a real syslog receiver on loopback.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conduit.audit.formats import parse_rfc5424
from conduit.cli.main import main
from tests.audit.syslog_listener import Listener
from tests.gateway import test_audit_trail, test_devices
from tests.gateway.test_devices import Fleet, fleet_policy, keygen
from tests.support.gateway import RunningGateway, random_file, wait_for

siem = test_audit_trail.siem  # a real TCP syslog receiver (fixture)
fleet = test_devices.fleet  # real sshd devices (fixture)


def journal(root: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted((root / "audit").glob("journal-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


def connects(root: Path) -> list[dict[str, Any]]:
    return [r for r in journal(root) if r["type"] == "device.connect"]


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _mismatch(text: str, fleet: Fleet, tmp: Path) -> str:
    impostor = " ".join(keygen(tmp / "impostor").split(" ")[:2])
    return text.replace(fleet.sftp.host_key, impostor)


def _key_missing(text: str, fleet: Fleet, tmp: Path) -> str:
    # A copy of the key that `check` would accept; the test deletes it once
    # the gateway runs (a key file lost on a running gateway).
    (tmp / "gone-key").write_bytes(fleet.identity.read_bytes())
    (tmp / "gone-key").chmod(0o600)
    return text.replace(f'identity = "{fleet.identity}"', f'identity = "{tmp}/gone-key"', 1)


def _auth_refused(text: str, fleet: Fleet, tmp: Path) -> str:
    keygen(tmp / "stranger")  # a key the device does not know
    return text.replace(f'identity = "{fleet.identity}"', f'identity = "{tmp}/stranger"', 1)


def _unreachable(text: str, fleet: Fleet, tmp: Path) -> str:
    return text.replace(fleet.sftp.address, dead_address())


_SILENT: list[socket.socket] = []  # listeners that never speak (closed by the fixture)


def _timeout(text: str, fleet: Fleet, tmp: Path) -> str:
    # The kernel completes the TCP handshake; no SSH banner ever comes.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    _SILENT.append(silent)
    return text.replace(fleet.sftp.address, f"127.0.0.1:{silent.getsockname()[1]}")


# code: (policy edit, what OpenSSH scp/sftp print for the SFTP status, the reason text)
CASES: dict[str, tuple[Callable[[str, Fleet, Path], str], str, str]] = {
    "host_key_mismatch": (
        _mismatch,
        "Connection lost",
        "device host key does not match the pinned key",
    ),
    "key_missing": (_key_missing, "No connection", "the gateway's key for this device is missing"),
    "auth_refused": (
        _auth_refused,
        "Permission denied",
        "device refused the gateway's credentials",
    ),
    "unreachable": (_unreachable, "No connection", "device unreachable"),
    "timeout": (_timeout, "No connection", "device did not answer in time"),
}


@pytest.fixture
def broken(
    make_gateway: Any, keys: dict[str, Path], fleet: Fleet, tmp_path: Path, siem: Any
) -> Iterator[Callable[[str], tuple[RunningGateway, Path, Listener]]]:
    listener, _ = siem

    def make(code: str) -> tuple[RunningGateway, Path, Listener]:
        root = tmp_path / "site"
        root.mkdir()
        text = fleet_policy(root, keys, fleet) + (
            f'\n[audit]\njournal = "{root}/audit"\n'
            f'[[audit.siem]]\ntarget = "{listener.target}"\nformat = "rfc5424"\n'
        )
        text = CASES[code][0](text, fleet, tmp_path)
        (root / "conduit.toml").write_text(text)
        running = make_gateway(text=text, recorder="journal")
        (tmp_path / "gone-key").unlink(missing_ok=True)
        return running, root, listener

    yield make
    while _SILENT:
        _SILENT.pop().close()


@pytest.mark.parametrize("code", sorted(CASES))
def test_device_failure_is_journalled_shown_and_told(
    broken: Any, code: str, tmp_path: Path, fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    _, fx_text, reason = CASES[code]
    gw, root, listener = broken(code)
    src = random_file(tmp_path / "fw.bin", 1000)
    caplog.set_level(logging.WARNING, logger="conduit.relay")

    # OpenSSH scp (SFTP protocol) and sftp print the status; legacy scp the reason.
    modern = gw.scp(str(src), ":/devices/plc-sftp/fw.bin")
    assert modern.returncode != 0 and fx_text in modern.stderr, modern.stderr
    batch = gw.sftp(f"put {src} /devices/plc-sftp/fw2.bin\n")
    assert batch.returncode != 0 and fx_text in batch.stderr, batch.stderr
    legacy = gw.scp(str(src), ":/devices/plc-sftp/fw3.bin", legacy=True)
    assert legacy.returncode != 0 and reason in legacy.stderr, legacy.stderr
    assert not list(fleet.roots["plc-sftp"].iterdir())

    # Every attempt journalled (a client's stat and its open each try the
    # device), with the code as the reason.
    records = connects(root)
    assert len(records) >= 3
    for record in records:
        assert record["outcome"] == "failed" and record["device"] == "plc-sftp"
        assert record["reason"] == code and record["address"]
        assert record["severity"] == ("alert" if code == "host_key_mismatch" else "error")
    if code == "host_key_mismatch":
        assert "possible man in the middle" in records[0]["error"]
        assert "presented SHA256:" in records[0]["error"]  # the impostor's fingerprint

    # The console: once per device and code within the interval, not three times.
    lines = [
        r for r in caplog.records if r.name == "conduit.relay" and f"[{code}]" in r.getMessage()
    ]
    assert len(lines) == 1 and reason in lines[0].getMessage()
    expected = logging.ERROR if code == "host_key_mismatch" else logging.WARNING
    assert lines[0].levelno == expected

    # The SIEM hears it too; a host key mismatch at syslog severity 1 (alert).
    def siem_records() -> list[tuple[int, dict[str, Any]]]:
        found = []
        for message in list(listener.messages):
            try:
                pri, _, record = parse_rfc5424(message)
            except ValueError:
                continue
            if record.get("type") == "device.connect":
                found.append((pri, record))
        return found

    heard = wait_for(lambda: len(siem_records()) >= 3 and siem_records(), timeout=15)
    assert heard, "the SIEM never heard of the failure"
    assert {record["reason"] for _, record in heard} == {code}
    severity = 1 if code == "host_key_mismatch" else 3
    assert {pri % 8 for pri, _ in heard} == {severity}

    # The other device is untouched, and the journal verifies.
    ok = gw.scp(str(src), ":/devices/plc-scp/ok.bin", legacy=True)
    assert ok.returncode == 0, ok.stderr
    (fleet.roots["plc-scp"] / "ok.bin").unlink()
    assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0


def test_reload_closes_changed_and_removed_devices(
    make_gateway: Any, keys: dict[str, Path], fleet: Fleet, tmp_path: Path
) -> None:
    root = tmp_path / "site"
    root.mkdir()
    text = fleet_policy(root, keys, fleet) + f'\n[audit]\njournal = "{root}/audit"\n'
    gw = make_gateway(text=text, recorder="journal")
    src = random_file(tmp_path / "fw.bin", 1000)
    for device in ("plc-sftp", "plc-scp"):
        assert gw.scp(str(src), f":/devices/{device}/fw.bin", legacy=True).returncode == 0
    links = {name: gw.gateway.devices[name].link for name in ("plc-sftp", "plc-scp")}
    assert all(link._conn is not None for link in links.values())

    # plc-sftp changes (its timeout), plc-scp goes.
    source = gw.config.source
    assert source is not None
    start = text.index("[devices.plc-scp]")
    changed = text[:start] + text[text.index("[roles.engineer]") :]
    changed = changed.replace("connect_timeout = 3", "connect_timeout = 4")
    source.write_text(changed)
    result = gw.call(gw.gateway.reload_policy(via="test"))
    assert result.applied and sorted(result.devices_closed) == ["plc-scp", "plc-sftp"]
    assert all(link._conn is None for link in links.values())  # closed, not left open
    closes = {r["device"]: r for r in journal(root) if r["type"] == "device.close"}
    assert closes["plc-scp"]["reason"] == "device removed from the policy"
    assert closes["plc-sftp"]["reason"] == "device settings changed"
    # The changed device is reached afresh; the removed one is gone.
    assert gw.scp(str(src), ":/devices/plc-sftp/fw2.bin", legacy=True).returncode == 0
    assert gw.scp(str(src), ":/devices/plc-scp/fw2.bin", legacy=True).returncode != 0
    for device_root in fleet.roots.values():
        for entry in device_root.iterdir():
            entry.unlink()


def test_console_counts_what_it_held_back(
    broken: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw, root, _ = broken("unreachable")
    src = random_file(tmp_path / "fw.bin", 100)
    caplog.set_level(logging.WARNING, logger="conduit.relay")
    for name in ("a", "b", "c"):
        assert gw.scp(str(src), f":/devices/plc-sftp/{name}.bin", legacy=True).returncode != 0
    shown = [r.getMessage() for r in caplog.records if "[unreachable]" in r.getMessage()]
    assert len(shown) == 1 and "more since" not in shown[0]
    attempts = len(connects(root))
    gw.gateway.device_watch.interval = 0  # the minute is over
    assert gw.scp(str(src), ":/devices/plc-sftp/d.bin", legacy=True).returncode != 0
    shown = [r.getMessage() for r in caplog.records if "[unreachable]" in r.getMessage()]
    assert len(shown) >= 2
    assert f"({attempts - 1} more since the last such line)" in shown[1]
