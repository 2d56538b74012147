"""Rename and replace obey the conduits; windows close on open transfers.

Real OpenSSH clients for renames and uploads; an asyncssh client for the
window cases, since only a client we drive can pause mid-transfer while the
gateway's policy clock moves past the window's end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import asyncssh
import pytest

from tests.support.gateway import RunningGateway, random_file, sha256, wait_for

ENTERPRISE, DMZ = "127.0.0.2", "127.0.0.3"
KiB = 1024


def site(root: Path, keys: dict[str, Path]) -> str:
    def pub(name: str) -> str:
        return keys[name].with_suffix(".pub").read_text().strip()

    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{root}/data"

[zones.enterprise]
level = 4
networks = ["{ENTERPRISE}/32", "127.0.0.1/32"]
[zones.dmz]
level = 3.5
networks = ["{DMZ}/32"]

[areas.fw]
zone = "dmz"
path = "{root}/areas/fw"

[roles.engineer]
grants = [{{ target = "fw", ops = ["list", "read", "write", "rename"] }}]
[roles.curator]
grants = [{{ target = "fw", ops = ["delete"] }}]
[roles.writer]
grants = [{{ target = "fw", ops = ["write"] }}]

[users.alice]
keys = ["{pub("alice")}"]
roles = ["engineer"]
[users.mallory]
keys = ["{pub("mallory")}"]
roles = ["engineer", "curator"]
[users.bob]
keys = ["{pub("bob")}"]
roles = ["writer"]

[[conduits]]
name = "fw-bin"
from = "enterprise"
to = "dmz"
paths = ["*.bin"]
max_size = "1KiB"
[[conduits]]
name = "notes"
from = "enterprise"
to = "dmz"
paths = ["*.txt", "*.log"]
[[conduits]]
name = "logs-up"
from = "dmz"
to = "enterprise"
paths = ["*.log"]
max_size = "200KiB"
[[conduits]]
name = "data-down"
from = "enterprise"
to = "dmz"
paths = ["*.dat"]
window = "daily 10:00-10:02"
[[conduits]]
name = "data-up"
from = "dmz"
to = "enterprise"
paths = ["*.dat"]
window = "daily 10:00-10:02"
"""


@pytest.fixture
def fw(make_gateway, keys: dict[str, Path], tmp_path: Path) -> RunningGateway:  # type: ignore[no-untyped-def]
    root = tmp_path / "site"
    root.mkdir()
    gw = make_gateway(text=site(root, keys))
    area = gw.area("fw")
    (area / "config.txt").write_text("secret config\n")
    (area / "a.log").write_text("a\n")
    (area / "b.log").write_text("b\n")
    (area / "other.bin").write_bytes(b"alice's firmware")
    return gw


def ent() -> tuple[str, ...]:
    return ("-o", f"BindAddress={ENTERPRISE}")


def renames(gw: RunningGateway, outcome: str) -> list[dict]:  # type: ignore[type-arg]
    if outcome == "denied":
        return [e for e in gw.recorder.of("access.denied") if e["operation"] == "rename"]
    return gw.recorder.of("file.rename", outcome)


def test_rename_cannot_smuggle_past_the_size_limit(fw: RunningGateway, tmp_path: Path) -> None:
    big = random_file(tmp_path / "fw.bin", 100_000)
    assert fw.scp(str(big), ":/fw/", extra=ent()).returncode != 0  # the conduit's limit
    txt, log = tmp_path / "fw.txt", tmp_path / "fw.log"
    txt.write_bytes(big.read_bytes())
    log.write_bytes(big.read_bytes())
    result = fw.sftp(f"put {txt} /fw/\nput {log} /fw/\n", extra=ent())
    assert result.returncode == 0, result.stderr
    for old in ("/fw/fw.txt", "/fw/fw.log"):
        result = fw.sftp(f"rename {old} /fw/fw.bin\n", extra=ent())
        assert result.returncode != 0
    area = fw.area("fw")
    assert not (area / "fw.bin").exists()
    assert sha256(area / "fw.txt") == sha256(area / "fw.log") == sha256(big)
    reasons = [e["reason"] for e in renames(fw, "denied")]
    assert "read the old name" in reasons[0]  # .txt may not flow back: no read, no rename
    assert "write the new name" in reasons[1] and "max_size 1024 < size 100000" in reasons[1]
    assert not renames(fw, "success")


def test_rename_cannot_make_a_read_denied_file_readable(fw: RunningGateway, tmp_path: Path) -> None:
    assert fw.sftp(f"get /fw/config.txt {tmp_path}/c\n", extra=ent()).returncode != 0
    result = fw.sftp("rename /fw/config.txt /fw/config.log\n", extra=ent())
    assert result.returncode != 0
    assert (fw.area("fw") / "config.txt").read_text() == "secret config\n"
    assert not (fw.area("fw") / "config.log").exists() and not (tmp_path / "c").exists()


def test_rename_within_the_rules_works(fw: RunningGateway, tmp_path: Path) -> None:
    small = random_file(tmp_path / "small.log", 500)
    batch = f"put {small} /fw/\nrename /fw/small.log /fw/small.bin\n"
    result = fw.sftp(batch, extra=ent())
    assert result.returncode == 0, result.stderr
    assert sha256(fw.area("fw") / "small.bin") == sha256(small)
    (event,) = renames(fw, "success")
    assert (event["old_path"], event["new_path"]) == ("/fw/small.log", "/fw/small.bin")


def test_rename_onto_an_existing_file_needs_delete(fw: RunningGateway) -> None:
    result = fw.sftp("rename /fw/a.log /fw/b.log\n", extra=ent())  # posix-rename: replaces
    assert result.returncode != 0
    area = fw.area("fw")
    assert (area / "b.log").read_text() == "b\n" and (area / "a.log").read_text() == "a\n"
    assert "replace what the new name holds" in renames(fw, "denied")[0]["reason"]
    result = fw.sftp("rename /fw/a.log /fw/b.log\n", user="mallory", extra=ent())
    assert result.returncode == 0, result.stderr
    assert (area / "b.log").read_text() == "a\n" and not (area / "a.log").exists()


def test_write_only_user_cannot_empty_a_file(
    fw: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    empty = tmp_path / "other.bin"
    empty.write_bytes(b"")
    result = fw.scp(str(empty), ":/fw/", legacy=legacy, user="bob", extra=ent())
    assert result.returncode != 0
    result = fw.sftp(f"put {empty} /fw/other.bin\n", user="bob", extra=ent())
    assert result.returncode != 0
    assert (fw.area("fw") / "other.bin").read_bytes() == b"alice's firmware"
    assert not fw.recorder.of("file.upload", "success")
    new = random_file(tmp_path / "new.bin", 100)
    assert fw.scp(str(new), ":/fw/", legacy=legacy, user="bob", extra=ent()).returncode == 0


class Clock:
    """The gateway policy's clock, moved by the test (UTC, the site's time zone)."""

    def __init__(self, gw: RunningGateway, start: str) -> None:
        self.now = dt.datetime.fromisoformat(start).replace(tzinfo=dt.UTC)
        gw.gateway.policy.clock = lambda: self.now

    def set(self, when: str) -> None:
        self.now = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC)


def test_upload_committed_after_the_window_is_refused(fw: RunningGateway) -> None:
    clock = Clock(fw, "2026-11-24T10:01:30")

    async def upload() -> str:
        async with (
            fw.connect(local_addr=(ENTERPRISE, 0)) as conn,
            conn.start_sftp_client() as sftp,
        ):
            handle = await sftp.open("/fw/late.dat", "wb")
            await handle.write(b"x" * 5000)
            clock.set("2026-11-24T10:02:03")  # the window ended at 10:02
            try:
                await handle.close()
            except asyncssh.SFTPError as exc:
                return str(exc.reason)
            return "committed"

    assert asyncio.run(asyncio.wait_for(upload(), 30)) == "outside the window of data-down"
    area = fw.area("fw")
    assert not (area / "late.dat").exists()
    assert not [n for n in area.iterdir() if n.name.startswith(".conduit-part")]
    assert wait_for(lambda: fw.recorder.of("file.upload", "failed"))
    assert not fw.recorder.of("file.upload", "success")
    assert any(e["path"] == "/fw/late.dat" for e in fw.recorder.of("access.denied"))


def test_download_ends_with_the_window(fw: RunningGateway) -> None:
    (fw.area("fw") / "big.dat").write_bytes(b"y" * (2 * 1024 * KiB))
    clock = Clock(fw, "2026-11-24T10:01:50")

    async def download() -> tuple[int, str]:
        async with (
            fw.connect(local_addr=(ENTERPRISE, 0)) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open("/fw/big.dat", "rb") as handle,
        ):
            first = await handle.read(64 * KiB, 0)
            clock.set("2026-11-24T10:02:00")
            try:
                await handle.read(64 * KiB, 64 * KiB)
            except asyncssh.SFTPError as exc:
                return len(first), str(exc.reason)
            return len(first), "read"

    assert asyncio.run(asyncio.wait_for(download(), 30)) == (
        64 * KiB,
        "outside the window of data-up",
    )
    assert wait_for(lambda: fw.recorder.of("file.download", "failed"))
    (failed,) = fw.recorder.of("file.download", "failed")
    assert "is open daily 10:00-10:02" in failed["error"] and failed["bytes"] == 64 * KiB


def test_download_over_the_read_limit_is_refused(
    fw: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    """The read conduit's max_size applies to the file's real size (at the first read)."""
    (fw.area("fw") / "huge.log").write_bytes(b"z" * 300 * KiB)
    result = fw.scp(":/fw/huge.log", str(tmp_path / "huge.log"), legacy=legacy, extra=ent())
    assert result.returncode != 0
    assert not (tmp_path / "huge.log").exists() or (tmp_path / "huge.log").stat().st_size == 0
    if legacy:
        assert "larger than 204800 bytes" in result.stderr
    denied = [e for e in fw.recorder.of("access.denied") if e["path"] == "/fw/huge.log"]
    assert denied and "max_size 204800 < size 307200" in denied[0]["reason"]
    assert not fw.recorder.of("file.download")  # refused before anything was sent
    result = fw.scp(":/fw/a.log", str(tmp_path / "a.log"), legacy=legacy, extra=ent())
    assert result.returncode == 0 and (tmp_path / "a.log").read_text() == "a\n"
