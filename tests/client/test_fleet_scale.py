"""A fleet of 23 real devices on loopback: a push, a pull and two backups in one module.

16 SFTP ``sshd`` and 5 legacy-SCP-only ``sshd`` (each its own port, host key,
folder, and one of four client keys that only it and its siblings accept),
one SFTP device behind a link that dies after 300 KB (mid-transfer), one
real sshd whose pinned host key is another's (an impostor) and one that
accepts TCP and never speaks (hangs). All are started once for the module,
in parallel; each job is bounded by its per-device timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import selectors
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conduit.cli.main import main
from tests.storage.relay.sshd import Sshd, keygen, start_sshd

SFTP, SCP = 16, 5
CUT_AFTER = 300_000
CUT = r"(fw\.bin|app\.log): (?i:connection (reset|lost|closed))"


class CuttingLink:
    """A TCP relay to ``port`` that drops each connection after ``budget`` bytes (both
    directions counted): a device whose link dies mid-transfer."""

    def __init__(self, port: int, budget: int) -> None:
        self.port, self.budget = port, budget
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(near,), daemon=True).start()

    def _relay(self, near: socket.socket) -> None:
        far = socket.create_connection(("127.0.0.1", self.port))
        selector = selectors.DefaultSelector()
        selector.register(near, selectors.EVENT_READ, far)
        selector.register(far, selectors.EVENT_READ, near)
        moved = 0
        try:
            while moved < self.budget and not self.closed:
                for key, _ in selector.select(timeout=0.5):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
                    moved += len(data)
        except OSError:
            pass
        finally:
            selector.close()
            for sock in (near, far):
                sock.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@dataclass
class Fleet:
    base: Path
    inventory: Path
    sshds: dict[str, Sshd]
    names: list[str]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("fleet-scale")
    keys = [base / f"ops{i}_ed25519" for i in range(4)]
    with ThreadPoolExecutor(8) as pool:
        pubs = list(pool.map(lambda k: keygen(k, k.name), keys))
        kinds = [f"sftp{i:02d}" for i in range(SFTP)] + [f"scp{i:02d}" for i in range(SCP)]
        kinds += ["mid01", "impostor01"]

        def start(index_name: tuple[int, str]) -> Sshd:
            index, name = index_name
            return start_sshd(
                base / "sshd" / name, client_keys=[pubs[index % 4]], sftp=not name.startswith("scp")
            )

        started = list(pool.map(start, enumerate(kinds)))
    sshds = dict(zip(kinds, started, strict=True))
    cut = CuttingLink(sshds["mid01"].port, CUT_AFTER)
    hang = socket.create_server(("127.0.0.1", 0))
    lines = ['[defaults]\nuser = "root"\nconnect_timeout = 15\n']
    for index, name in enumerate(kinds):
        sshd = sshds[name]
        address = cut.address if name == "mid01" else sshd.address
        key = sshds["sftp00"].host_key if name == "impostor01" else sshd.host_key
        lines.append(
            f'[devices.{name}]\naddress = "{address}"\nhost_key = "{key}"\n'
            f'identity = "{keys[index % 4]}"\n'
            f'protocol = "{"scp" if name.startswith("scp") else "sftp"}"\ngroups = ["plant"]\n'
        )
    lines.append(
        f'[devices.hang01]\naddress = "127.0.0.1:{hang.getsockname()[1]}"\n'
        f'host_key = "{sshds["sftp00"].host_key}"\nidentity = "{keys[0]}"\n'
        'connect_timeout = 2\ngroups = ["plant"]\n'
    )
    names = [*kinds, "hang01"]
    for name in names:
        root = base / "roots" / name
        (root / "fw").mkdir(parents=True)
        (root / "logs").mkdir()
        (root / "etc").mkdir()
        (root / "logs" / "app.log").write_bytes(
            os.urandom(1 << 20) if name == "mid01" else f"{name} log\n".encode() * 50
        )
        (root / "logs" / "app.log.1").write_bytes(b"yesterday\n")
        (root / "etc" / "device.conf").write_text(f"name {name}\nmode run\n")
    path = base / "inventory.toml"
    path.write_text("\n".join(lines))
    (base / "fw.bin").write_bytes(os.urandom(1 << 20))
    try:
        yield Fleet(base, path, sshds, names)
    finally:
        cut.close()
        hang.close()
        for sshd in sshds.values():
            sshd.stop()


def run_job(fleet: Fleet, **keys: object) -> tuple[int, dict[str, dict[str, Any]]]:
    values: dict[str, object] = {
        "inventory": str(fleet.inventory),
        "targets": ["plant"],
        "canary": 1,
        "max_failures": 5,
        "concurrency": 12,
        "timeout": "40s",
        "report": "out/report",
    }
    values.update(keys)
    path = fleet.base / "job.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    code = main(["fleet", "run", str(path)])
    report = json.loads((fleet.base / "out" / "report.json").read_text())
    assert (fleet.base / "out" / "report.html").is_file()
    return code, {d["name"]: d for d in report["devices"]}


def expect(devices: dict[str, dict[str, Any]], good: str, **others: str) -> None:
    wanted = {name: others.get(name, good) for name in devices}
    assert {n: d["status"] for n, d in devices.items()} == wanted, {
        n: d["error"] for n, d in devices.items() if d["error"]
    }


def test_push_to_the_fleet(fleet: Fleet) -> None:
    code, devices = run_job(
        fleet, kind="push", source=str(fleet.base / "fw.bin"),
        destination=f"{fleet.base}/roots/{{device}}/fw/fw.bin",
    )  # fmt: skip
    assert code == 1
    expect(devices, "ok", mid01="failed", impostor01="failed", hang01="failed")
    digest = hashlib.sha256((fleet.base / "fw.bin").read_bytes()).hexdigest()
    for name, device in devices.items():
        landed = fleet.base / "roots" / name / "fw" / "fw.bin"
        if device["status"] == "ok":
            assert hashlib.sha256(landed.read_bytes()).hexdigest() == digest
        else:
            assert not landed.exists()  # nothing under the final name
    assert "host key" in devices["impostor01"]["error"]
    assert devices["sftp00"]["step"] == "canary"
    assert re.search(CUT, devices["mid01"]["error"])  # cut mid-file


def test_pull_from_the_fleet(fleet: Fleet) -> None:
    code, devices = run_job(
        fleet, kind="pull", source=f"{fleet.base}/roots/{{device}}/logs/*.log",
        rotations=True, destination="collected",
    )  # fmt: skip
    assert code == 1
    expect(devices, "ok", mid01="failed", impostor01="failed", hang01="failed")
    collected = fleet.base / "collected"
    for name, device in devices.items():
        folder = collected / name / str(fleet.base / "roots" / name / "logs").lstrip("/")
        if device["status"] == "ok":
            assert sorted(p.name for p in folder.iterdir()) == ["app.log", "app.log.1"]
            assert {f["sha256"] for f in device["files"]} == {
                hashlib.sha256((folder / n).read_bytes()).hexdigest()
                for n in ("app.log", "app.log.1")
            }
        else:
            assert not (collected / name).exists()
    assert re.search(CUT, devices["mid01"]["error"])
    assert not list(collected.glob(".*"))  # no scratch folder left, even by the cut device


def test_backup_of_the_fleet_then_drift_on_one_device(fleet: Fleet) -> None:
    job = {"kind": "backup", "source": f"{fleet.base}/roots/{{device}}/etc/*.conf",
           "destination": "store"}  # fmt: skip
    code, devices = run_job(fleet, **job)
    assert code == 1
    expect(devices, "ok", impostor01="failed", hang01="failed")  # mid01's config is small
    conf = fleet.base / "roots" / "scp03" / "etc" / "device.conf"
    conf.write_text("name scp03\nmode maintenance\n")
    code, devices = run_job(fleet, **job, targets=["plant"])
    expect(devices, "unchanged", scp03="changed", impostor01="failed", hang01="failed")
    assert "-mode run\n+mode maintenance\n" in devices["scp03"]["diff"]
    objects = [p for p in (fleet.base / "store" / "objects").rglob("*") if p.is_file()]
    # One per device backed up (every config names its device: all differ), + the drift.
    assert len(objects) == len(fleet.names) - 2 + 1
