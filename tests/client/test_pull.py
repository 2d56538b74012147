"""``kind = "pull"`` over real sshd devices: globs, rotations, ``since``, nothing
overwritten, a glob that matches nothing, a full disk and a lying device."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conduit.cli.main import main
from tests.storage.relay.sshd import start_sshd
from tests.support.gateway import conduit_env

from .conftest import Devices
from .test_fleet import inventory, job, report, statuses


def far_logs(folder: Path, name: str, files: dict[str, bytes], old: tuple[str, ...] = ()) -> Path:
    logs = folder / "far" / name / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for file, data in files.items():
        (logs / file).write_bytes(data)
    for file in old:
        stamp = time.time() - 3 * 86400
        os.utime(logs / file, (stamp, stamp))
    return logs


def pull_job(folder: Path, **keys: object) -> Path:
    values: dict[str, object] = {
        "kind": "pull",
        "source": f"{folder}/far/{{device}}/logs/*.log",
        "destination": "collected",
    }
    values.update(keys)
    return job(folder, **values)


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in data["devices"]}


def landed(folder: Path, device: str) -> Path:
    return folder / "collected" / device / str(folder / "far" / device / "logs").lstrip("/")


def test_pull_brings_matches_rotations_and_recent_files_only(
    devices: Devices, tmp_path: Path
) -> None:
    inventory(devices, tmp_path, ["good", "scp"])
    for name in ("good", "scp"):
        far_logs(
            tmp_path, name,
            {"app.log": name.encode() * 100, "app.log.1": b"one", "app.log.2.gz": b"\x1f\x8b",
             "old.log": b"stale", "notes.txt": b"not a log"},
            old=("old.log",),
        )  # fmt: skip
    assert main(["fleet", "run", str(pull_job(tmp_path, rotations=True, since="1d"))]) == 0
    data = report(tmp_path)
    assert statuses(data) == {"good": "ok", "scp": "ok"}
    for name, entry in by_name(data).items():
        folder = landed(tmp_path, name)
        assert sorted(p.name for p in folder.iterdir()) == ["app.log", "app.log.1", "app.log.2.gz"]
        files = {Path(f["local"]).name: f for f in entry["files"]}
        for file, item in files.items():
            assert item["sha256"] == hashlib.sha256((folder / file).read_bytes()).hexdigest()
            assert item["kept"] == "new"
        assert (folder / "app.log").read_bytes() == name.encode() * 100
        assert entry["bytes"] == len(name) * 100 + 3 + 2
    assert not list((tmp_path / "collected").glob(".*"))  # no scratch left


def test_a_rerun_overwrites_nothing_and_keeps_a_changed_file_beside(
    devices: Devices, tmp_path: Path
) -> None:
    inventory(devices, tmp_path, ["good"])
    logs = far_logs(tmp_path, "good", {"app.log": b"first"})
    path = pull_job(tmp_path)
    assert main(["fleet", "run", str(path)]) == 0
    assert main(["fleet", "run", str(path)]) == 0
    [entry] = by_name(report(tmp_path))["good"]["files"]
    assert entry["kept"] == "same"
    (logs / "app.log").write_bytes(b"second")
    assert main(["fleet", "run", str(path)]) == 0
    [entry] = by_name(report(tmp_path))["good"]["files"]
    second = hashlib.sha256(b"second").hexdigest()
    assert entry["kept"] == "beside" and entry["local"].endswith(f"app.log~{second[:8]}")
    folder = landed(tmp_path, "good")
    assert (folder / "app.log").read_bytes() == b"first"
    assert (folder / f"app.log~{second[:8]}").read_bytes() == b"second"


def test_a_glob_matching_nothing_fails_that_device_only(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory(devices, tmp_path, ["good", "good2", "scp"])
    far_logs(tmp_path, "good", {"app.log": b"x"})
    far_logs(tmp_path, "scp", {"other.txt": b"x"})
    assert main(["fleet", "run", str(pull_job(tmp_path, canary=0, max_failures=5))]) == 1
    data = by_name(report(tmp_path))
    assert data["good"]["status"] == "ok"
    for name in ("good2", "scp"):
        assert data[name]["status"] == "failed"
        assert "no file matches" in data[name]["error"]
    assert "Traceback" not in capsys.readouterr().err


def test_a_hostile_far_name_is_refused(devices: Devices, tmp_path: Path) -> None:
    inventory(devices, tmp_path, ["good"])
    far_logs(tmp_path, "good", {"ok.log": b"x", "\x1b[2Jevil.log": b"y"})
    assert main(["fleet", "run", str(pull_job(tmp_path))]) == 1
    entry = by_name(report(tmp_path))["good"]
    assert "refusing the far name" in entry["error"]
    assert not (tmp_path / "collected" / "good").exists()  # not even ok.log: all or nothing
    assert not list((tmp_path / "collected").glob(".*"))


def test_a_named_folder_is_an_error_not_an_empty_success(devices: Devices, tmp_path: Path) -> None:
    inventory(devices, tmp_path, ["good"])
    far_logs(tmp_path, "good", {"app.log": b"x"})
    path = pull_job(tmp_path, source=f"{tmp_path}/far/{{device}}/logs")
    assert main(["fleet", "run", str(path)]) == 1
    assert "logs: not a regular file" in by_name(report(tmp_path))["good"]["error"]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"since": "yesterday"}, "since: "),
        ({"destination": "out/{device}"}, "a local folder takes no placeholder"),
        ({"rotation": True}, "rotation: unknown key"),
    ],
)
def test_bad_pull_jobs_are_refused(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    keys: dict[str, object], expected: str,
) -> None:  # fmt: skip
    inventory(devices, tmp_path, ["good"])
    assert main(["fleet", "run", str(pull_job(tmp_path, **keys))]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "collected").exists()


def test_a_full_disk_fails_that_device_cleanly_and_the_rest_go_on(
    devices: Devices, tmp_path: Path
) -> None:
    """A real ``conduit fleet run`` whose files may not exceed 256 KiB (RLIMIT_FSIZE:
    the disk is full for a bigger file): the device with the big log fails with one
    line, nothing of it is left, the others are collected."""
    inventory(devices, tmp_path, ["good", "scp"])
    far_logs(tmp_path, "good", {"app.log": b"small"})
    far_logs(tmp_path, "scp", {"app.log": b"small too"})
    (tmp_path / "far" / "big").mkdir(exist_ok=True)
    far_logs(tmp_path, "big", {"app.log": os.urandom(1 << 20)})
    text = (tmp_path / "inventory.toml").read_text()
    (tmp_path / "inventory.toml").write_text(
        text + f'\n[devices.big]\naddress = "{devices.sftp.address}"\n'
        f'host_key = "{devices.sftp.host_key}"\ngroups = ["site"]\n'
    )
    limit = 256 << 10

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {k: v for k, v in conduit_env().items() if k != "SSH_AUTH_SOCK"}
    done = subprocess.run(
        [sys.executable, "-m", "conduit", "fleet", "run",
         str(pull_job(tmp_path, canary=0, max_failures=5))],
        capture_output=True, text=True, timeout=90, env=env, preexec_fn=preexec,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    data = by_name(json.loads((tmp_path / "out" / "report.json").read_text()))
    assert data["good"]["status"] == data["scp"]["status"] == "ok"
    assert data["big"]["status"] == "failed"
    assert "File too large" in data["big"]["error"]
    assert not (tmp_path / "collected" / "big").exists()
    assert not list((tmp_path / "collected").glob(".*"))


def test_a_device_returning_a_wrong_hash_keeps_nothing(devices: Devices, tmp_path: Path) -> None:
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "sha256sum").write_text("#!/bin/sh\necho " + "0" * 64 + '  "$2"\n')
    (fake / "sha256sum").chmod(0o755)
    pub = devices.identity.with_suffix(".pub").read_text()
    liar = start_sshd(tmp_path / "liar", client_keys=[pub], sftp=False,
                      extra=(f"SetEnv PATH={fake}:/usr/bin:/bin",))  # fmt: skip
    try:
        path = inventory(devices, tmp_path, ["good"])
        path.write_text(
            path.read_text().replace("[defaults]\n", '[defaults]\nremote_hash = "sha256sum"\n')
            + f'\n[devices.liar]\naddress = "{liar.address}"\nhost_key = "{liar.host_key}"\n'
            'groups = ["site"]\nprotocol = "scp"\n'
        )
        far_logs(tmp_path, "good", {"app.log": b"good"})
        far_logs(tmp_path, "liar", {"app.log": b"lies"})
        assert main(["fleet", "run", str(pull_job(tmp_path, canary=0, max_failures=5))]) == 1
    finally:
        liar.stop()
    data = by_name(report(tmp_path))
    assert data["good"]["status"] == "ok" and data["good"]["verified"]
    assert data["liar"]["status"] == "failed"
    assert "hashes to 0000000000000000" in data["liar"]["error"]
    assert not (tmp_path / "collected" / "liar").exists()


async def test_the_python_api_pulls_and_backs_up(devices: Devices, tmp_path: Path) -> None:
    from conduit.client import DeviceResult, Fleet, Job, load
    from conduit.client.report import write

    path = inventory(devices, tmp_path, ["good", "scp"])
    for name in ("good", "scp"):
        far_logs(tmp_path, name, {"app.log": name.encode()})
    source = f"{tmp_path}/far/{{device}}/logs/app.log"
    pull = Job(inventory=path, kind="pull", targets=["site"], source=source,
               destination=str(tmp_path / "got"), canary=0)  # fmt: skip
    seen: list[DeviceResult] = []
    fleet = Fleet(pull, load(path).select(pull.targets), on_result=seen.append)
    report = await fleet.pull()
    assert report["summary"]["success"] and sorted(r.name for r in seen) == ["good", "scp"]
    backup = pull.model_copy(update={"kind": "backup", "destination": str(tmp_path / "store")})
    first = await Fleet(backup, load(path).select(["site"])).backup()
    again = await Fleet(backup, load(path).select(["site"])).backup()
    assert [d["status"] for d in first["devices"]] == ["ok", "ok"]
    assert [d["status"] for d in again["devices"]] == ["unchanged", "unchanged"]
    assert {d["baseline"] for d in again["devices"]} == {first["run"]}
    json_path, html_path = write(tmp_path / "r" / "report", again)
    assert json.loads(json_path.read_text()) == again and html_path.stat().st_size > 0


def test_a_dry_run_pull_shows_where_files_go_and_fetches_nothing(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory(devices, tmp_path, ["good", "hang"])
    far_logs(tmp_path, "good", {"app.log": b"x"})
    assert main(["fleet", "run", "--dry-run", str(pull_job(tmp_path))]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("pull ") and "from 2 device(s); nothing is sent" in lines[0]
    assert lines[1].endswith(f"-> {tmp_path}/collected/good")
    assert not (tmp_path / "collected").exists()
