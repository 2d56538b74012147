"""Downloads scanned before the first byte goes out (``on_read = "scan"``):
real scp, scp -O and sftp through a gateway whose checks are the real
:class:`conduit.inspect.plan.Inspector`, a real clamd with the tests'
database, libmagic and the real journal.

The files are put into the area behind the gateway's back (logs written in
the control zone), never through quarantine: the scan at read time is the
only thing that clears them. One gateway and one clamd serve the module;
the scanner-stopped test runs last.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conduit.config import parse
from tests.gateway.test_audit_trail import journal_records
from tests.support.clamd import EICAR, Clamd, available, start_clamd, stop_clamd
from tests.support.gateway import (
    RunningGateway,
    conduit_env,
    make_key,
    sha256,
    start_gateway,
    stop_gateway,
)

CLIENTS = ["scp", "scp-O", "sftp"]


def log_text(size: int) -> bytes:
    """Fresh log lines (text/plain to libmagic, whatever the random part:
    random bytes alone are sometimes taken for some format)."""
    lines, length = [], 0
    while length < size:
        line = f"2026-12-03T10:00:00Z rtu-7 pump {os.urandom(12).hex()} ok\n".encode()
        lines.append(line)
        length += len(line)
    return b"".join(lines)


def policy(root: Path, keys: dict[str, Path], clamd: Clamd) -> str:
    alice = keys["alice"].with_suffix(".pub").read_text().strip()
    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{root}/data"

[gateway.limits]
idle_timeout = 0

[audit]
journal = "{root}/audit"

[inspect.scan]
clamd = "{clamd.address}"
timeout = 10

[zones.local]
level = 3
networks = ["127.0.0.0/8"]

[zones.plant]
level = 1
networks = ["10.99.0.0/16"]

[areas.logs]
zone = "plant"
path = "{root}/areas/logs"

[roles.reader]
grants = [{{ target = "logs", ops = ["list", "read"] }}]

[users.alice]
keys = ["{alice}"]
roles = ["reader"]

[[conduits]]
name = "logs-out"
from = "plant"
to = "local"
paths = ["logs/**"]
require = ["scan"]
types = ["application/octet-stream", "text/plain"]
on_read = "scan"
"""


class Site:
    def __init__(self, gw: RunningGateway, clamd: Clamd) -> None:
        self.gw, self.clamd = gw, clamd

    def place(self, name: str, data: bytes) -> Path:
        """A file written into the area behind the gateway's back."""
        path = self.gw.area("logs") / name
        path.write_bytes(data)
        return path

    def get(self, client: str, name: str, dest: Path) -> Any:
        if client == "sftp":
            return self.gw.sftp(f"get /logs/{name} {dest}\n", user="alice")
        return self.gw.scp(f":/logs/{name}", str(dest), legacy=client == "scp-O", user="alice")

    def records(self, **match: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in journal_records(self.gw.root / "audit")
            if all(r.get(k) == v for k, v in match.items())
        ]

    def started(self, name: str) -> list[dict[str, Any]]:
        return self.records(type="file.download", outcome="started", path=f"/logs/{name}")

    def denied(self, name: str) -> list[dict[str, Any]]:
        return self.records(type="access.denied", path=f"/logs/{name}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not available():
        pytest.fail("clamd is missing: apt-get install clamav-daemon (see .ci/run)")
    root = tmp_path_factory.mktemp("readscan")
    clamd = start_clamd(tmp_path_factory.mktemp("clamd"))
    keys = {"alice": make_key(tmp_path_factory.mktemp("keys"), "alice")}
    text = policy(root, keys, clamd)
    (root / "conduit.toml").write_text(text)
    config = parse(text, source=root / "conduit.toml")
    (root / "areas" / "logs").mkdir(parents=True)
    gw = start_gateway(config, keys, root, "journal")  # checks: Inspector(config)
    yield Site(gw, clamd)
    stop_gateway(gw)
    stop_clamd(clamd)


# -- hostile first ---------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_malware_is_refused_before_a_byte_goes_out(site: Site, tmp_path: Path, client: str) -> None:
    name = f"eicar-{client}.log"
    placed = site.place(name, os.urandom(30_000) + EICAR + os.urandom(30_000))
    dest = tmp_path / name
    done = site.get(client, name, dest)
    assert done.returncode != 0
    assert not dest.exists()  # nothing sent, not even a partial file
    if client == "scp-O":  # the SCP error line carries the check's reason
        assert "scan: malware found (Conduit.Test.Eicar" in done.stderr, done.stderr
    [denied] = site.denied(name)
    assert sha256(placed) in denied["reason"] and "scan:failed:" in denied["reason"], denied
    assert "Conduit.Test.Eicar.UNOFFICIAL FOUND" in denied["reason"], denied
    assert not site.started(name)


def test_a_script_is_refused_with_its_type(site: Site, tmp_path: Path) -> None:
    site.place("run.log", b"#!/bin/sh\nrm -rf /opt/plc\n" * 50)
    done = site.get("scp-O", "run.log", tmp_path / "run.log")
    assert done.returncode != 0 and "type: text/x-shellscript not allowed" in done.stderr
    assert not (tmp_path / "run.log").exists()
    [denied] = site.denied("run.log")
    assert "type:failed:" in denied["reason"], denied


def test_a_refused_file_is_scanned_again_not_remembered(site: Site, tmp_path: Path) -> None:
    site.place("again.log", EICAR)
    for attempt in range(2):
        assert site.get("sftp", "again.log", tmp_path / f"again-{attempt}").returncode != 0
    assert len(site.denied("again.log")) == 2


# -- clean files -----------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_a_clean_file_is_scanned_then_served_on_its_cached_verdict(
    site: Site, tmp_path: Path, client: str
) -> None:
    name = f"clean-{client}.log"
    placed = site.place(name, log_text(200_000))
    for attempt in ("first", "second"):
        dest = tmp_path / f"{attempt}-{name}"
        done = site.get(client, name, dest)
        assert done.returncode == 0, done.stderr
        assert sha256(dest) == sha256(placed)
    first, second = site.started(name)
    assert first["inspected"] == "scanned" and second["inspected"] == "cached", (first, second)
    for record in (first, second):
        assert record["sha256_scanned"] == sha256(placed)
        checks = dict(c.rsplit(":", 1) for c in record["checks"].split())
        assert set(checks) == {"scan:passed", "type:passed"}, record["checks"]
        assert all(d.endswith("s") and float(d[:-1]) >= 0 for d in checks.values())
    assert second["scanned_at"] == first["scanned_at"]  # the same verdict, reused
    assert not site.denied(name)


def test_a_file_changed_after_its_scan_is_scanned_again(site: Site, tmp_path: Path) -> None:
    placed = site.place("changing.log", log_text(50_000))
    assert site.get("sftp", "changing.log", tmp_path / "a").returncode == 0
    placed.write_bytes(log_text(50_000))
    assert site.get("sftp", "changing.log", tmp_path / "b").returncode == 0
    assert sha256(tmp_path / "b") == sha256(placed)
    first, second = site.started("changing.log")
    assert (first["inspected"], second["inspected"]) == ("scanned", "scanned")
    assert second["sha256_scanned"] == sha256(placed) != first["sha256_scanned"]
    # and changed into malware after a clean scan: refused, the old verdict is no pass
    placed.write_bytes(log_text(1000) + EICAR)
    done = site.get("scp-O", "changing.log", tmp_path / "c")
    assert done.returncode != 0 and "scan: malware found" in done.stderr
    assert not (tmp_path / "c").exists()


def test_explain_says_a_download_is_scanned_first(site: Site) -> None:
    config = str(site.gw.root / "conduit.toml")
    argv = ["explain", "alice", "read", "/logs/a.log", "--from", "127.0.0.1", "--config", config]
    done = subprocess.run(
        [sys.executable, "-m", "conduit", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=conduit_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "once these bytes pass scan, type before the first byte goes out" in done.stdout
    assert "released from quarantine" not in done.stdout
    assert "on read: these checks run before a download's first byte goes out" in done.stdout


# -- last: the scanner goes away -------------------------------------------------------


def test_a_stopped_scanner_refuses_even_a_file_scanned_before(site: Site, tmp_path: Path) -> None:
    site.place("before.log", log_text(10_000))
    assert site.get("sftp", "before.log", tmp_path / "before").returncode == 0
    stop_clamd(site.clamd)
    site.place("unscanned.log", log_text(10_000))
    for name in ("unscanned.log", "before.log"):  # no scanner to vouch for its version
        dest = tmp_path / f"after-{name}"
        done = site.get("scp-O", name, dest)
        assert done.returncode != 0 and "scan: scanner unavailable" in done.stderr, done.stderr
        assert not dest.exists()
        [denied] = site.denied(name)
        assert "scan:failed:" in denied["reason"], denied
