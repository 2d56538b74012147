"""``kind = "backup"`` over real sshd devices: a content-addressed store, one index per
run, drift against the last good run or a pinned baseline, diffs capped."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conduit.cli.main import main
from tests.support.gateway import conduit_env

from .conftest import Devices
from .test_fleet import inventory, job, report


def configs(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    etc = folder / "far" / name / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for file, data in files.items():
        (etc / file).write_bytes(data)
    return etc


def backup_job(folder: Path, **keys: object) -> Path:
    values: dict[str, object] = {
        "kind": "backup",
        "source": [f"{folder}/far/{{device}}/etc/*.conf", f"{folder}/far/{{device}}/etc/fw.img"],
        "destination": "store",
        "canary": 0,
        "max_failures": 5,
    }
    values.update(keys)
    return job(folder, **values)


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in data["devices"]}


def objects(folder: Path) -> set[str]:
    return {p.name for p in (folder / "store" / "objects").rglob("*") if p.is_file()}


def test_backup_stores_once_and_reports_drift_with_a_diff(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory(devices, tmp_path, ["good", "scp"])
    good = configs(tmp_path, "good", {"net.conf": b"ip 10.0.0.1\nmask 24\n", "fw.img": b"\0\1"})
    configs(tmp_path, "scp", {"net.conf": b"ip 10.0.0.2\nmask 24\n", "fw.img": b"\0\2"})
    path = backup_job(tmp_path)
    assert main(["fleet", "run", str(path)]) == 0
    first = report(tmp_path)
    out = capsys.readouterr().out
    assert f"backup run: {first['run']}" in out and "report.html" in out
    assert {d["status"] for d in first["devices"]} == {"ok"}  # type: ignore[attr-defined]
    assert objects(tmp_path) == {
        hashlib.sha256(data).hexdigest()
        for data in (b"ip 10.0.0.1\nmask 24\n", b"\0\1", b"ip 10.0.0.2\nmask 24\n", b"\0\2")
    }
    index = json.loads(Path(str(first["index"])).read_text())
    assert index["run"] == first["run"] and set(index["devices"]) == {"good", "scp"}

    assert main(["fleet", "run", str(path)]) == 0
    second = by_name(report(tmp_path))
    assert {d["status"] for d in second.values()} == {"unchanged"}
    assert second["good"]["baseline"] == first["run"] and second["good"]["diff"] is None
    assert len(objects(tmp_path)) == 4  # nothing stored twice

    (good / "net.conf").write_bytes(b"ip 10.0.0.9\nmask 24\n")
    (good / "fw.img").write_bytes(b"\0\3")
    assert main(["fleet", "run", str(path)]) == 0  # drift is a result, not a failure
    third = by_name(report(tmp_path))
    assert third["scp"]["status"] == "unchanged"
    assert third["good"]["status"] == "changed"
    diff = third["good"]["diff"]
    assert "-ip 10.0.0.1\n+ip 10.0.0.9\n" in diff and " mask 24\n" in diff
    old, new = hashlib.sha256(b"\0\1").hexdigest(), hashlib.sha256(b"\0\3").hexdigest()
    assert f"Binary {good}/fw.img: {old} -> {new}" in diff
    assert len(objects(tmp_path)) == 6

    # Pinned to the first run, a device that went back to it is unchanged; the
    # last good run (the third) would have said changed.
    (good / "net.conf").write_bytes(b"ip 10.0.0.1\nmask 24\n")
    (good / "fw.img").write_bytes(b"\0\1")
    assert main(["fleet", "run", str(backup_job(tmp_path, baseline=first["run"]))]) == 0
    pinned = by_name(report(tmp_path))
    assert pinned["good"]["status"] == "unchanged"
    assert pinned["good"]["baseline"] == first["run"]


def test_a_pinned_baseline_that_does_not_exist_stops_before_anything(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory(devices, tmp_path, ["good"])
    configs(tmp_path, "good", {"a.conf": b"x"})
    assert main(["fleet", "run", str(backup_job(tmp_path, baseline="../../etc/passwd"))]) == 2
    err = capsys.readouterr().err
    assert "no run '../../etc/passwd' in the store" in err and "Traceback" not in err
    assert not (tmp_path / "store" / "objects").exists()


def test_a_large_diff_is_capped_and_failures_are_no_baseline(
    devices: Devices, tmp_path: Path
) -> None:
    inventory(devices, tmp_path, ["good", "good2"])
    etc = configs(
        tmp_path, "good", {"big.conf": "".join(f"line {i}\n" for i in range(5000)).encode()}
    )
    path = backup_job(tmp_path, diff_limit=1000, source=f"{tmp_path}/far/{{device}}/etc/*.conf")
    assert main(["fleet", "run", str(path)]) == 1  # good2 has no config: no file matches
    data = by_name(report(tmp_path))
    assert data["good"]["status"] == "ok" and data["good2"]["status"] == "failed"
    (etc / "big.conf").write_text("".join(f"line {i} changed\n" for i in range(5000)))
    configs(tmp_path, "good2", {"a.conf": b"now here"})
    assert main(["fleet", "run", str(path)]) == 0
    data = by_name(report(tmp_path))
    assert data["good"]["status"] == "changed"
    assert data["good"]["diff"].endswith("... (diff truncated at 1000 bytes)\n")
    assert len(data["good"]["diff"]) < 1100
    assert data["good2"]["status"] == "ok"  # its failed run was no baseline


def test_ctrl_c_during_a_backup_still_writes_the_run_index_and_reports(
    devices: Devices, tmp_path: Path
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    inventory(devices, tmp_path, ["good", "hang", "hang2"], hang=listener.getsockname()[1])
    configs(tmp_path, "good", {"a.conf": b"x"})
    path = backup_job(tmp_path, source=f"{tmp_path}/far/{{device}}/etc/*.conf", timeout="60s",
                      concurrency=2)  # fmt: skip
    env = {**conduit_env(), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "conduit", "fleet", "run", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("ok      good"), first
        held = [listener.accept()[0] for _ in range(2)]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        listener.close()
    for connection in held:
        connection.close()
    assert process.returncode == 1 and "Traceback" not in err, err
    assert "backup run: " in out and "interrupted" in out
    data = report(tmp_path)
    assert data["job"]["interrupted"] is True  # type: ignore[index]
    index = json.loads(Path(str(data["index"])).read_text())
    assert {n: d["status"] for n, d in index["devices"].items()} == {
        "good": "ok", "hang": "failed", "hang2": "failed",
    }  # fmt: skip
    assert (tmp_path / "out" / "report.html").is_file()
    assert not list((tmp_path / "store").glob(".*"))  # no scratch folder left
