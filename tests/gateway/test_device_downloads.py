"""Relay downloads hashed beside the event loop, through the real gateway.

The SFTP relay hashes what it serves on a worker thread and lends that hash
to the transfer's record. Hostile case first: the client killed mid-download,
blocks read ahead and hashing in flight; the journal must say so with no
hash and still verify, and the next download of the same file must record
the hash of exactly the bytes served. Real OpenSSH scp, a real sshd device,
the real journal.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from conduit.cli.main import main
from tests.gateway import test_devices
from tests.gateway.test_devices import Fleet, fleet_policy
from tests.support.gateway import USER, random_file, scp_argv, sha256, wait_for

fleet = test_devices.fleet  # real sshd devices (fixture)


def downloads(root: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted((root / "audit").glob("journal-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return [r for r in records if r["type"] == "file.download" and r["outcome"] != "started"]


def test_client_killed_mid_download_then_a_whole_one(
    make_gateway: Any, keys: dict[str, Path], fleet: Fleet, tmp_path: Path
) -> None:
    root = tmp_path / "site"
    root.mkdir()
    text = fleet_policy(root, keys, fleet) + f'\n[audit]\njournal = "{root}/audit"\n'
    (root / "conduit.toml").write_text(text)
    gw = make_gateway(text=text, recorder="journal")
    src = random_file(fleet.roots["plc-sftp"] / "image.bin", 48 * 1024 * 1024 + 17)
    try:
        dst = tmp_path / "image.bin"
        # Slowed by a bandwidth limit so that it is surely cut mid-file.
        argv = scp_argv(gw.port, gw.known_hosts, keys[USER], "-l", "40000")
        client = subprocess.Popen(
            [*argv, f"{USER}@127.0.0.1:/devices/plc-sftp/image.bin", str(dst)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert wait_for(lambda: dst.exists() and dst.stat().st_size > 4 << 20, timeout=30)
        finally:
            client.send_signal(signal.SIGKILL)
            client.wait(10)
        assert dst.stat().st_size < src.stat().st_size
        (cut,) = wait_for(lambda: downloads(root), timeout=15)
        assert cut.get("sha256") is None  # nothing vouched for bytes never all served
        assert cut["outcome"] == "failed", cut

        whole = gw.scp(":/devices/plc-sftp/image.bin", str(dst), timeout=120)
        assert whole.returncode == 0, whole.stderr
        assert sha256(dst) == sha256(src)
        records = wait_for(lambda: len(downloads(root)) == 2 and downloads(root), timeout=15)
        assert records[1]["outcome"] == "success" and records[1]["sha256"] == sha256(src)
        assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0
    finally:
        src.unlink()
