"""``conduit fleet run`` over real sshd devices: bad jobs first, then canaries, waves,
a device that hangs, one with a wrong host key, one that refuses, and the report."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conduit.cli.main import main
from tests.storage.relay.sshd import start_sshd
from tests.support.gateway import conduit_env

from .conftest import Devices


def inventory(devices: Devices, folder: Path, names: list[str], hang: int | None = None) -> Path:
    """Devices by kind: good (SFTP), scp, wrongkey, hang, closed (``hang``: another port)."""
    kinds = {
        "good": (devices.sftp.address, devices.sftp.host_key, "sftp"),
        "scp": (devices.scp.address, devices.scp.host_key, "scp"),
        "wrongkey": (devices.sftp.address, devices.scp.host_key, "sftp"),
        "hang": (f"127.0.0.1:{hang or devices.hang}", devices.sftp.host_key, "sftp"),
        "closed": (f"127.0.0.1:{devices.closed}", devices.sftp.host_key, "sftp"),
    }
    lines = [f'[defaults]\nuser = "root"\nidentity = "{devices.identity}"\nconnect_timeout = 20\n']
    for name in names:
        address, key, protocol = kinds[name.rstrip("0123456789")]
        lines.append(
            f'[devices.{name}]\naddress = "{address}"\nhost_key = "{key}"\n'
            f'protocol = "{protocol}"\ngroups = ["site"]\n'
            + ("connect_timeout = 2\n" if name.startswith("hang") else "")
        )
        (folder / "far" / name).mkdir(parents=True, exist_ok=True)
    path = folder / "inventory.toml"
    path.write_text("\n".join(lines))
    return path


def job(folder: Path, **keys: object) -> Path:
    values: dict[str, object] = {
        "inventory": "inventory.toml",
        "kind": "push",
        "targets": ["site"],
        "source": "fw.bin",
        "destination": f"{folder}/far/{{device}}/fw.bin",
        "timeout": "30s",  # a busy machine; the silent device fails on its connect_timeout
        "retry_backoff": "0.1s",
        "report": "out/report",
    }
    values.update(keys)
    path = folder / "job.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    if not (folder / "fw.bin").exists():
        (folder / "fw.bin").write_bytes(os.urandom(200_000))
    return path


def report(folder: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((folder / "out" / "report.json").read_text())
    return data


def statuses(data: dict[str, object]) -> dict[str, str]:
    return {d["name"]: d["status"] for d in data["devices"]}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"concurrancy": 4}, "concurrancy: unknown key"),
        ({"kind": "sync"}, "kind: Input should be 'push', 'pull' or 'backup'"),
        ({"destination": "/x/{host}/fw.bin"}, "unknown placeholder {host}"),
        ({"targets": ["nowhere"]}, "no device or group 'nowhere'"),
        ({"inventory": "absent.toml"}, "no such inventory file"),
        ({"canary": -1}, "canary: Input should be greater than or equal to 0"),
        ({"timeout": "soon"}, "timeout: "),
        ({"timeout": "0s"}, "timeout: Input should be greater than 0"),
    ],
)
def test_bad_jobs_are_refused_before_anything_runs(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: dict[str, object],
    expected: str,
) -> None:  # fmt: skip
    inventory(devices, tmp_path, ["good"])
    assert main(["fleet", "run", str(job(tmp_path, **keys))]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert list((tmp_path / "far" / "good").iterdir()) == []
    assert not (tmp_path / "out").exists()


def test_dry_run_connects_to_nothing(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory(devices, tmp_path, ["good", "hang", "good2"])
    assert main(["fleet", "run", "--dry-run", str(job(tmp_path, wave=1))]) == 0
    lines = capsys.readouterr().out.splitlines()
    far, sftp = tmp_path / "far", f"root@127.0.0.1:{devices.sftp.port}"
    assert lines[1:] == [
        f"  canary  good  {sftp}  sftp  -> {far}/good/fw.bin",
        f"  wave 1  hang  root@127.0.0.1:{devices.hang}  sftp  -> {far}/hang/fw.bin",
        f"  wave 2  good2  {sftp}  sftp  -> {far}/good2/fw.bin",
    ]
    assert not any((tmp_path / "far").rglob("fw.bin"))


def test_push_survives_hanging_refusing_and_impostor_devices(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory(devices, tmp_path, ["good", "scp", "wrongkey", "hang", "closed"])
    path = job(tmp_path, max_failures=5, concurrency=4, retries=1)
    assert main(["fleet", "run", str(path)]) == 1
    data = report(tmp_path)
    assert statuses(data) == {
        "good": "ok", "scp": "ok", "wrongkey": "failed", "hang": "failed", "closed": "failed",
    }  # fmt: skip
    by_name = {d["name"]: d for d in data["devices"]}  # type: ignore[attr-defined]
    digest = hashlib.sha256((tmp_path / "fw.bin").read_bytes()).hexdigest()
    for name in ("good", "scp"):
        assert by_name[name]["sha256"] == digest and by_name[name]["verified"]
        assert by_name[name]["bytes"] == 200_000
        assert sorted(p.name for p in (tmp_path / "far" / name).iterdir()) == ["fw.bin"]
    assert "host key not verified" in by_name["wrongkey"]["error"]
    assert by_name["wrongkey"]["attempts"] == 1  # a wrong key is not retried
    assert "timeout" in by_name["hang"]["error"] or "timed out" in by_name["hang"]["error"]
    assert "connection refused" in by_name["closed"]["error"]
    assert by_name["closed"]["attempts"] == 2
    for name in ("wrongkey", "hang", "closed"):
        assert list((tmp_path / "far" / name).iterdir()) == []
    assert data["summary"] == {
        "ok": 2, "unchanged": 0, "changed": 0, "failed": 3, "skipped": 0, "total": 5,
        "success": False,
    }  # fmt: skip
    assert data["job"]["kind"] == "push" and data["job"]["user"]  # type: ignore[index]
    out = capsys.readouterr().out
    assert f"ok      good  {digest}  200000 bytes" in out and "report:" in out


def test_a_failed_canary_stops_the_job(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory(devices, tmp_path, ["wrongkey", "good", "good2"])
    assert main(["fleet", "run", str(job(tmp_path, max_failures=10))]) == 1
    assert statuses(report(tmp_path)) == {
        "wrongkey": "failed",
        "good": "skipped",
        "good2": "skipped",
    }
    assert not any((tmp_path / "far").rglob("fw.bin"))


def test_waves_stop_once_failures_pass_the_threshold(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory(devices, tmp_path, ["good", "closed", "good2", "good3"])
    path = job(tmp_path, canary=1, wave=1, concurrency=1, max_failures=0)
    assert main(["fleet", "run", "--json", str(path)]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed == report(tmp_path)
    assert statuses(printed) == {
        "good": "ok", "closed": "failed", "good2": "skipped", "good3": "skipped",
    }  # fmt: skip
    assert [d["step"] for d in printed["devices"]] == ["canary", "wave 1", "wave 2", "wave 3"]
    assert (tmp_path / "far" / "good" / "fw.bin").exists()
    assert not (tmp_path / "far" / "good2" / "fw.bin").exists()


def test_all_ok_exits_zero(devices: Devices, tmp_path: Path) -> None:
    path = inventory(devices, tmp_path, ["good", "scp", "good2"])
    path.write_text(
        path.read_text().replace("[defaults]\n", '[defaults]\nremote_hash = "sha256sum"\n')
    )
    assert main(["fleet", "run", str(job(tmp_path, canary=2))]) == 0
    assert set(statuses(report(tmp_path)).values()) == {"ok"}


def test_ctrl_c_stops_cleanly_and_still_reports(devices: Devices, tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # its own: no earlier test's queue
    listener.settimeout(20)
    inventory(devices, tmp_path, ["good", "hang", "hang2"], hang=listener.getsockname()[1])
    path = job(tmp_path, timeout="60s", concurrency=2, max_failures=5)
    env = {**conduit_env(), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "conduit", "fleet", "run", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("ok      good"), first
        held = [listener.accept()[0] for _ in range(2)]  # both silent devices are connecting
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        listener.close()
    assert len(held) == 2
    for connection in held:
        connection.close()
    assert process.returncode == 1, err
    assert "Traceback" not in err and "interrupted" in out
    data = report(tmp_path)
    assert data["job"]["interrupted"] is True  # type: ignore[index]
    assert statuses(data) == {"good": "ok", "hang": "failed", "hang2": "failed"}
    assert all(
        "interrupted" in d["error"]
        for d in data["devices"]
        if d["name"] != "good"  # type: ignore[attr-defined]
    )


def test_a_rerun_skips_devices_that_already_hold_the_file(devices: Devices, tmp_path: Path) -> None:
    path = inventory(devices, tmp_path, ["good", "scp", "good2"])
    assert main(["fleet", "run", str(job(tmp_path))]) == 0
    (tmp_path / "far" / "good2" / "fw.bin").write_bytes(b"tampered")
    again = job(tmp_path, skip_unchanged=True)
    assert main(["fleet", "run", str(again)]) == 0
    # The SCP device cannot be read back: without sha256sum it is pushed again.
    assert statuses(report(tmp_path)) == {"good": "unchanged", "scp": "ok", "good2": "ok"}
    assert (tmp_path / "far" / "good2" / "fw.bin").read_bytes() == (
        tmp_path / "fw.bin"
    ).read_bytes()
    path.write_text(
        path.read_text().replace("[defaults]\n", '[defaults]\nremote_hash = "sha256sum"\n')
    )
    assert main(["fleet", "run", str(again)]) == 0
    assert set(statuses(report(tmp_path)).values()) == {"unchanged"}
    assert report(tmp_path)["summary"]["success"] is True  # type: ignore[index]


def test_checks_run_only_where_the_profile_allows_them(devices: Devices, tmp_path: Path) -> None:
    path = inventory(devices, tmp_path, ["good", "good2"])
    allowed = '[devices.good]\ncommands = ["true", "false", "echo post-ok"]\n'
    path.write_text(path.read_text().replace("[devices.good]\n", allowed))
    checked = job(tmp_path, canary=0, max_failures=5, pre_check="true", post_check="echo post-ok")
    assert main(["fleet", "run", str(checked)]) == 1
    data = report(tmp_path)
    by_name = {d["name"]: d for d in data["devices"]}  # type: ignore[attr-defined]
    assert by_name["good"]["status"] == "ok"
    assert by_name["good"]["checks"] == [
        {"when": "pre", "command": "true", "exit": 0, "output": ""},
        {"when": "post", "command": "echo post-ok", "exit": 0, "output": "post-ok"},
    ]
    assert "is not among the commands its inventory entry allows" in by_name["good2"]["error"]
    assert by_name["good2"]["attempts"] == 1
    assert not (tmp_path / "far" / "good2" / "fw.bin").exists()
    (tmp_path / "far" / "good" / "fw.bin").unlink()
    assert main(["fleet", "run", str(job(tmp_path, targets=["good"], pre_check="false"))]) == 1
    [failed] = report(tmp_path)["devices"]  # type: ignore[misc]
    assert failed["status"] == "failed" and "pre_check 'false' failed (exit 1)" in failed["error"]
    assert not (tmp_path / "far" / "good" / "fw.bin").exists()


async def test_the_python_api_pushes_to_twenty_devices_within_its_concurrency(
    devices: Devices, tmp_path: Path
) -> None:
    from conduit.client.fleet import Fleet
    from conduit.client.inventory import load
    from conduit.client.job import load_job

    names = [f"good{n}" for n in range(10)] + [f"scp{n}" for n in range(10)]
    inventory(devices, tmp_path, names)
    loaded = load_job(job(tmp_path, concurrency=6, canary=2, wave=8))
    finished: list[str] = []
    fleet = Fleet(loaded, load(loaded.inventory).select(loaded.targets),
                  on_result=lambda r: finished.append(r.name))  # fmt: skip
    report = await fleet.push()
    errors = [d["error"] for d in report["devices"] if d["error"]]
    assert report["summary"]["ok"] == 20 and sorted(finished) == sorted(names), errors
    assert [d["step"] for d in report["devices"]][:3] == ["canary", "canary", "wave 1"]
    assert finished[:2] == ["good0", "good1"]  # the canaries, one at a time, first
    for name in names:
        assert (tmp_path / "far" / name / "fw.bin").read_bytes() == (
            tmp_path / "fw.bin"
        ).read_bytes()


def test_a_device_that_reports_a_wrong_hash_keeps_its_old_file(
    devices: Devices, tmp_path: Path
) -> None:
    """A device whose own sha256sum lies (a real sshd whose PATH finds a fake one): the
    verification fails for that device only, and the new file never gets its name."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "sha256sum").write_text("#!/bin/sh\necho " + "0" * 64 + '  "$2"\n')
    (fake / "sha256sum").chmod(0o755)
    pub = devices.identity.with_suffix(".pub").read_text()
    liar = start_sshd(tmp_path / "liar", client_keys=[pub], sftp=True,
                      extra=(f"SetEnv PATH={fake}:/usr/bin:/bin",))  # fmt: skip
    try:
        path = inventory(devices, tmp_path, ["good"])
        path.write_text(
            path.read_text().replace("[defaults]\n", '[defaults]\nremote_hash = "sha256sum"\n')
            + f'\n[devices.liar2]\naddress = "{liar.address}"\nhost_key = "{liar.host_key}"\n'
            'groups = ["site"]\n'
        )
        (tmp_path / "far" / "liar2").mkdir()
        (tmp_path / "far" / "liar2" / "fw.bin").write_bytes(b"old")
        pushed = job(tmp_path, canary=0, max_failures=5)
        assert main(["fleet", "run", str(pushed)]) == 1
    finally:
        liar.stop()
    by_name = {d["name"]: d for d in report(tmp_path)["devices"]}  # type: ignore[attr-defined]
    assert by_name["good"]["status"] == "ok"
    assert by_name["liar2"]["status"] == "failed"
    assert "the far copy hashes to 0000000000000000" in by_name["liar2"]["error"]
    assert sorted(p.name for p in (tmp_path / "far" / "liar2").iterdir()) == ["fw.bin"]
    assert (tmp_path / "far" / "liar2" / "fw.bin").read_bytes() == b"old"


def test_the_job_timeout_bounds_a_device_whatever_its_connect_timeout(
    devices: Devices, tmp_path: Path
) -> None:
    path = inventory(devices, tmp_path, ["hang"])
    path.write_text(path.read_text().replace("connect_timeout = 2\n", "connect_timeout = 60\n"))
    assert main(["fleet", "run", str(job(tmp_path, timeout="1s", retries=3))]) == 1
    [device] = report(tmp_path)["devices"]  # type: ignore[misc]
    assert device["error"] == "hang: no result within 1 s (timeout)"
    assert device["attempts"] == 1
