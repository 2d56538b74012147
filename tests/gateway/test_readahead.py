"""Downloads read ahead in a worker thread, driven by real OpenSSH clients.

Hostile cases: the client is killed with read-ahead in flight, the file grows
under a download, many downloads at once against a small shared bound. The
gateway runs in this process, so the test sees its descriptors and budget.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from conduit.transfer import readahead
from conduit.transfer.budget import ReorderBudget
from tests.support.gateway import RunningGateway, random_file, run_sampling, sha256, wait_for


def fetch(gw: RunningGateway, legacy: bool, name: str, dst: Path, limit: int) -> list[str]:
    """scp argv fetching /outbox/``name``, throttled to ``limit`` Kbit/s."""
    return [
        "scp",
        "-q",
        *(["-O"] if legacy else []),
        "-l",
        str(limit),
        "-P",
        str(gw.port),
        *gw.ssh_options(),
        f"alice@127.0.0.1:/outbox/{name}",
        str(dst),
    ]


def open_on(path: Path) -> bool:
    """Whether this process (the gateway) holds a descriptor on ``path``."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def test_client_killed_with_read_ahead_in_flight(
    gw: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    src = random_file(gw.area("outbox") / "big.img", 32 * 1024 * 1024)
    dst = tmp_path / "big.img"
    client = subprocess.Popen(
        fetch(gw, legacy, "big.img", dst, 16000),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # scp and its ssh child die together
    )
    try:
        # The client is slower than the disk: blocks wait read ahead, held in the budget.
        assert wait_for(lambda: readahead.shared_budget().held > 0, timeout=20)
        assert wait_for(lambda: dst.exists() and dst.stat().st_size > 0, timeout=20)
        assert open_on(src)
        os.killpg(client.pid, signal.SIGKILL)
        client.wait(10)
    finally:
        client.kill()
    assert wait_for(lambda: gw.recorder.of("file.download", "failed"), timeout=20)
    failed = gw.recorder.of("file.download", "failed")[0]
    assert failed.get("sha256") is None and 0 < failed["bytes"] < src.stat().st_size
    assert not gw.recorder.of("file.download", "success")
    # Nothing held, nothing open: the read in flight landed before the descriptor closed.
    assert wait_for(lambda: readahead.shared_budget().held == 0, timeout=10)
    assert wait_for(lambda: not open_on(src), timeout=10)


def test_file_grown_during_download_arrives_as_opened(
    gw: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    src = random_file(gw.area("outbox") / "app.log", 12 * 1024 * 1024)
    before = src.read_bytes()
    dst = tmp_path / "app.log"
    client = subprocess.Popen(
        fetch(gw, legacy, "app.log", dst, 40000),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: dst.exists() and dst.stat().st_size > 0, timeout=20)
        with src.open("ab") as log:
            log.write(os.urandom(3 * 1024 * 1024))  # still being written
        _, err = client.communicate(timeout=60)
    finally:
        client.kill()
    assert client.returncode == 0, err
    assert dst.read_bytes() == before
    done = gw.recorder.of("file.download", "success")
    assert [(e["bytes"], e["sha256"]) for e in done] == [(len(before), sha256(dst))]


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-scp"])
def test_many_downloads_stay_within_the_shared_bound(
    gw: RunningGateway, legacy: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 2 * 1024 * 1024
    budget = ReorderBudget(bound)
    monkeypatch.setattr(readahead, "_shared", budget)
    sources = [random_file(gw.area("outbox") / f"f{i}.bin", 6 * 1024 * 1024) for i in range(6)]
    peaks = run_sampling(
        [fetch(gw, legacy, src.name, tmp_path / src.name, 24000) for src in sources],
        lambda: budget.held,
    )
    assert peaks and 0 < max(peaks) <= bound  # used, and never beyond the bound
    for src in sources:
        assert sha256(tmp_path / src.name) == sha256(src)
    got = {e["path"]: e["sha256"] for e in gw.recorder.of("file.download", "success")}
    assert got == {f"/outbox/{src.name}": sha256(src) for src in sources}
    assert budget.held == 0


def test_segmented_and_resumed_downloads_say_what_left(gw: RunningGateway, tmp_path: Path) -> None:
    """No hash for either; the record must still tell a file that left whole
    (read in two segments, second first) from one that did not (OpenSSH's
    ``sftp reget``, resuming after the bytes the client already has)."""
    size = 3 * 1024 * 1024
    random_file(gw.area("outbox") / "seg.img", size)
    random_file(gw.area("outbox") / "resumed.img", size)

    async def segmented() -> int:
        async with gw.connect() as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("/outbox/seg.img", "rb") as f:
                await f.seek(size // 2)
                tail = await f.read()
                await f.seek(0)
                head = await f.read(size // 2)
                return len(head + tail)

    assert gw.call(segmented()) == size
    (tmp_path / "resumed.img").write_bytes((gw.area("outbox") / "resumed.img").read_bytes()[:1000])
    subprocess.run(
        ["sftp", "-q", "-P", str(gw.port), *gw.ssh_options(), "-b", "-", "alice@127.0.0.1"],
        input=f"reget /outbox/resumed.img {tmp_path / 'resumed.img'}\n",
        text=True,
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert sha256(tmp_path / "resumed.img") == sha256(gw.area("outbox") / "resumed.img")

    def said(name: str) -> dict[str, object] | None:
        done = [e for e in gw.recorder.of("file.download", "success") if e["path"] == name]
        return done[0] if done else None

    assert wait_for(lambda: said("/outbox/seg.img") and said("/outbox/resumed.img"))
    seg, resumed = said("/outbox/seg.img"), said("/outbox/resumed.img")
    assert seg is not None and resumed is not None
    assert seg["sha256"] is None and seg["error"] == "read out of order"
    assert seg["bytes"] == size
    assert resumed["sha256"] is None and resumed["error"] == "partial read"
    assert resumed["bytes"] == size - 1000
