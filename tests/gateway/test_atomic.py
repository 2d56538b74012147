"""Nothing partial under a final name: killed clients, refused writes, size limits."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import RunningGateway, policy_text, random_file, wait_for


def test_killed_client_leaves_nothing(gw: RunningGateway, legacy: bool, tmp_path: Path) -> None:
    src = random_file(tmp_path / "big.img", 48 * 1024 * 1024)
    inbox = gw.area("inbox")
    argv = [
        "scp",
        "-q",
        *(["-O"] if legacy else []),
        "-l",
        "16000",
        "-P",
        str(gw.port),
        *gw.ssh_options(),
        str(src),
        "alice@127.0.0.1:/inbox/big.img",
    ]
    client = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The upload is under way once a hidden temp file holds some bytes.
        assert wait_for(
            lambda: any(e.is_file() and e.stat().st_size > 0 for e in inbox.iterdir()), timeout=20
        )
        assert not (inbox / "big.img").exists()
        client.send_signal(signal.SIGKILL)
        client.wait(10)
    finally:
        client.kill()
    assert wait_for(lambda: gw.recorder.of("file.upload", "failed"), timeout=20)
    assert wait_for(lambda: os.listdir(inbox) == [], timeout=10), os.listdir(inbox)
    failed = gw.recorder.of("file.upload", "failed")[0]
    assert failed["path"] == "/inbox/big.img" and 0 < failed["bytes"] < src.stat().st_size
    assert not gw.recorder.of("file.upload", "success")


def test_refused_overwrite_keeps_old_file(gw: RunningGateway, legacy: bool, tmp_path: Path) -> None:
    (gw.area("outbox") / "keep.txt").write_bytes(b"original\n")
    src = tmp_path / "keep.txt"
    src.write_bytes(b"replacement\n")
    result = gw.scp(str(src), ":/outbox/keep.txt", legacy=legacy)
    assert result.returncode != 0
    assert "denied" in result.stderr.lower() or "not granted" in result.stderr.lower()
    assert (gw.area("outbox") / "keep.txt").read_bytes() == b"original\n"
    assert os.listdir(gw.area("outbox")) == ["keep.txt"]


def test_sftp_resume_is_refused_not_corrupting(gw: RunningGateway, tmp_path: Path) -> None:
    src = random_file(tmp_path / "r.bin", 200_000)
    (gw.area("inbox") / "r.bin").write_bytes(src.read_bytes()[:50_000])
    result = gw.sftp(f"reput {src} /inbox/r.bin\n")
    assert result.returncode != 0
    assert (gw.area("inbox") / "r.bin").read_bytes() == src.read_bytes()[:50_000]
    assert sorted(os.listdir(gw.area("inbox"))) == ["r.bin"]


def test_unclosed_sftp_upload_is_aborted(gw: RunningGateway) -> None:

    async def scenario() -> None:
        async with (
            gw.connect() as conn,
            conn.start_sftp_client() as sftp,
        ):
            f = await sftp.open("/inbox/half.bin", "wb")
            await f.write(b"x" * 100_000)
            # leave without closing: the connection drops with the handle open

    gw.call(scenario())  # the client runs on the gateway's loop: one process, real sockets
    assert wait_for(lambda: gw.recorder.of("file.upload", "failed"), timeout=10)
    assert os.listdir(gw.area("inbox")) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs) to fill up."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_leaves_nothing(
    make_gateway,
    small_disk: Path,
    legacy: bool,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    probe = make_gateway()
    text = policy_text(probe.root, probe.keys).replace(
        f'path = "{probe.root}/areas/inbox"', f'path = "{small_disk}"'
    )
    gw = make_gateway(text=text)
    big = random_file(tmp_path / "big.img", 3 * 1024 * 1024)
    result = gw.scp(str(big), ":/inbox/big.img", legacy=legacy)
    assert result.returncode != 0
    assert "space" in result.stderr.lower() or "failure" in result.stderr.lower(), result.stderr
    assert wait_for(lambda: os.listdir(small_disk) == [], timeout=10), os.listdir(small_disk)
    assert gw.recorder.of("file.upload", "failed")
    small = random_file(tmp_path / "small.txt", 1000)
    assert gw.scp(str(small), ":/inbox/", legacy=legacy).returncode == 0  # space came back


def test_full_disk_under_a_small_file_leaves_nothing(
    make_gateway,
    small_disk: Path,
    legacy: bool,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """A file under 64 KiB is written on the event loop, not behind it in a
    thread: a full disk must fail it the same way, with nothing left."""
    inbox = small_disk / "inbox"
    inbox.mkdir()
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # every page of the file system taken
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    probe = make_gateway()
    text = policy_text(probe.root, probe.keys).replace(
        f'path = "{probe.root}/areas/inbox"', f'path = "{inbox}"'
    )
    gw = make_gateway(text=text)
    small = random_file(tmp_path / "small.cfg", 40 * 1024)
    result = gw.scp(str(small), ":/inbox/small.cfg", legacy=legacy)
    assert result.returncode != 0
    assert wait_for(lambda: os.listdir(inbox) == [], timeout=10), os.listdir(inbox)
    assert gw.recorder.of("file.upload", "failed")
    assert not gw.recorder.of("file.upload", "success")
    filler.unlink()  # space came back: the same upload lands whole
    assert gw.scp(str(small), ":/inbox/small.cfg", legacy=legacy).returncode == 0
    assert (inbox / "small.cfg").read_bytes() == small.read_bytes()


class BrokenJournal:
    """A recorder that refuses file events, as a journal on a dead disk would;
    with ``outcomes_only`` it still takes the ``started`` record of a transfer."""

    available = True

    def __init__(self, outcomes_only: bool = False) -> None:
        self.outcomes_only = outcomes_only

    async def record(self, type: str, outcome: str, **fields: object) -> None:
        if type.startswith("file.") and not (self.outcomes_only and outcome == "started"):
            raise OSError("journal disk is gone")


def test_transfer_refused_when_audit_cannot_record(
    make_gateway,
    legacy: bool,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    gw = make_gateway(recorder=BrokenJournal())
    src = random_file(tmp_path / "x.bin", 10_000)
    result = gw.scp(str(src), ":/inbox/", legacy=legacy)
    assert result.returncode != 0
    # OpenSSH's SFTP client shows only the status code's name; scp -O the text.
    assert ("audit journal unavailable" if legacy else "Failure") in result.stderr
    assert os.listdir(gw.area("inbox")) == []


def test_download_refused_before_its_first_byte_without_its_record(
    make_gateway,
    legacy: bool,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Write-ahead for reads: the durable "started" record comes before any byte."""
    gw = make_gateway(recorder=BrokenJournal())
    random_file(gw.area("inbox") / "x.bin", 10_000)
    result = gw.scp(":/inbox/x.bin", str(tmp_path / "x.bin"), legacy=legacy)
    assert result.returncode != 0, result.stderr
    if legacy:
        assert "audit journal unavailable" in result.stderr
    got = tmp_path / "x.bin"
    assert not got.exists() or got.stat().st_size == 0


def test_download_outcome_is_not_a_refusal(
    make_gateway,
    legacy: bool,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Once its read is journalled, a download that went out is not reported as
    failed because its outcome record could not be written (the auditor holds
    it; recovery would settle it)."""
    gw = make_gateway(recorder=BrokenJournal(outcomes_only=True))
    src = random_file(gw.area("inbox") / "x.bin", 10_000)
    result = gw.scp(":/inbox/x.bin", str(tmp_path / "x.bin"), legacy=legacy)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.bin").read_bytes() == src.read_bytes()


def test_scp_source_sends_the_refusal_in_place_of_the_header(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """No byte of the file leaves before the read is journalled."""
    gw = make_gateway(recorder=BrokenJournal())
    random_file(gw.area("inbox") / "x.bin", 10_000)

    async def scenario() -> bytes:
        async with gw.connect() as conn:
            process = await conn.create_process("scp -f /inbox/x.bin", encoding=None)
            process.stdin.write(b"\0")
            first = await process.stdout.readline()
            process.close()
            return first

    first = gw.call(scenario())
    assert first.startswith(b"\x01") and b"audit journal unavailable" in first, first


def test_sftp_status_carries_the_reason(make_gateway) -> None:  # type: ignore[no-untyped-def]
    import asyncssh

    gw = make_gateway(recorder=BrokenJournal())

    async def scenario() -> str:
        async with (
            gw.connect() as conn,
            conn.start_sftp_client() as sftp,
        ):
            try:
                await sftp.open("/inbox/x.bin", "wb")
            except asyncssh.SFTPError as exc:
                return str(exc.reason)
            return "opened"

    assert gw.call(scenario()) == "audit journal unavailable: operation refused"
