"""The journal fails at each step (ENOSPC/EIO through the injectable file layer).

The gateway runs in-process with its real journal; ``conduit.audit.faults.fs``
is swapped for a layer that fails the write or flush of a chosen record, as a
full or failing disk would. Clients are real SSH clients (asyncssh in-process,
OpenSSH for the login message).
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conduit.audit import faults
from conduit.cli.main import main
from tests.gateway.test_audit_trail import audited_policy, journal_records, recorded


class Failing(faults.FileOps):
    """Fails the write (or flush) of records containing ``match`` while armed."""

    def __init__(self) -> None:
        self.match: bytes | None = None
        self.errno = errno.ENOSPC
        self.on = "write"
        self.pending = False
        self.failed = 0

    def write(self, fd: int, data: memoryview) -> int:
        hit = self.match is not None and self.match in bytes(data)
        if hit and self.on == "write":
            self.failed += 1
            raise OSError(self.errno, os.strerror(self.errno))
        self.pending = hit
        return super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        if self.pending and self.on == "fdatasync":
            self.pending = False
            self.failed += 1
            raise OSError(self.errno, os.strerror(self.errno))
        super().fdatasync(fd)


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Failing]:
    layer = Failing()
    monkeypatch.setattr(faults, "fs", layer)
    yield layer


OPS: dict[str, tuple[str, Any]] = {
    "upload": ("file.upload", None),
    "delete": ("file.delete", lambda s: s.remove("/inbox/keep.bin")),
    "rename": ("file.rename", lambda s: s.rename("/inbox/keep.bin", "/inbox/moved.bin")),
    "rmdir": ("dir.delete", lambda s: s.rmdir("/inbox/folder")),
    "mkdir": ("dir.create", lambda s: s.mkdir("/inbox/new")),
    "setstat": ("file.times", lambda s: s.utime("/inbox/keep.bin", (1, 1))),
}


def _setup(make_gateway, keys: dict[str, Path], tmp_path: Path) -> tuple[Any, Path]:  # type: ignore[no-untyped-def]
    root = tmp_path / "site"
    root.mkdir()
    gw = make_gateway(text=audited_policy(root, keys, 'on_failure = "closed"'), recorder="journal")
    inbox = gw.area("inbox")
    (inbox / "keep.bin").write_bytes(b"k" * 100)
    (inbox / "folder").mkdir()
    return gw, root


def _state(inbox: Path) -> list[tuple[str, float]]:
    return sorted((p.name, p.stat().st_mtime) for p in inbox.iterdir())


async def _run(sftp: Any, op: str) -> str:
    import asyncssh

    try:
        if op == "upload":
            async with sftp.open("/inbox/up.bin", "wb") as f:
                await f.write(b"u" * 5000)
        else:
            await OPS[op][1](sftp)
    except asyncssh.SFTPError as exc:
        return str(exc.reason)
    return "done"


@pytest.mark.parametrize("on", ["write", "fdatasync"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_intent_not_written_no_effect(
    make_gateway, keys: dict[str, Path], tmp_path: Path, failing: Failing, op: str, on: str
) -> None:  # type: ignore[no-untyped-def]
    gw, root = _setup(make_gateway, keys, tmp_path)
    inbox = gw.area("inbox")
    before = _state(inbox)
    type_ = OPS[op][0]
    failing.on = on

    async def scenario() -> str:
        async with gw.connect() as conn, conn.start_sftp_client() as sftp:
            # armed once the session is on record (see recorded())
            await recorded(root / "audit", "session.start")
            failing.match = b'"outcome":"intent"'
            return await _run(sftp, op)

    reason = gw.call(scenario())
    assert failing.failed >= 1
    assert "audit journal unavailable" in reason or reason == "Failure", reason
    assert _state(inbox) == before  # storage untouched, no temp file left
    failing.match = None
    records = journal_records(root / "audit")
    assert not [r for r in records if r["type"] == type_ and r["outcome"] == "intent"]
    assert not [r for r in records if r["type"] == type_ and r["outcome"] == "success"]


@pytest.mark.parametrize("op", sorted(OPS))
def test_outcome_not_written_effect_stands_and_is_journalled_later(
    make_gateway, keys: dict[str, Path], tmp_path: Path, failing: Failing, op: str
) -> None:  # type: ignore[no-untyped-def]
    """The disk fills between intent and outcome: the effect happened, the client
    hears success, and the outcome is written once the journal can take it."""
    gw, root = _setup(make_gateway, keys, tmp_path)
    inbox = gw.area("inbox")
    type_ = OPS[op][0]
    failing.match = b'"outcome":"success","path"'

    async def scenario() -> str:
        async with gw.connect() as conn, conn.start_sftp_client() as sftp:
            return await _run(sftp, op)

    if op == "upload":
        failing.match = b'"outcome":"success","path":"/inbox/up.bin"'
    result = gw.call(scenario())
    assert result == "done", result
    assert failing.failed >= 1
    failing.match = None
    # the journal comes back: the held outcome follows the "writable again" alert
    gw.call(gw.gateway.recorder.record("policy.reload", "success"), timeout=10)
    gw.call(gw.gateway.stop())
    records = journal_records(root / "audit")
    intents = [r for r in records if r["type"] == type_ and r["outcome"] == "intent"]
    assert len(intents) == 1
    key = intents[0].get("transfer") or intents[0]["intent"]
    ends = [
        r
        for r in records
        if r["type"] == type_
        and (r.get("transfer") == key or r.get("intent") == key)
        and r["outcome"] in ("success", "failed")
    ]
    assert [r["outcome"] for r in ends] == ["success"]
    alert = [r for r in records if r["type"] == "audit.alert" and "writable again" in r["reason"]]
    assert alert and alert[0]["seq"] < ends[0]["seq"]
    assert "held outcome(s) follow" in alert[0]["reason"]
    if op == "upload":
        assert (inbox / "up.bin").read_bytes() == b"u" * 5000
    (root / "conduit.toml").write_text(audited_policy(root, keys, 'on_failure = "closed"'))
    assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0


def test_login_refused_while_journal_is_down_says_why(
    make_gateway, keys: dict[str, Path], tmp_path: Path, failing: Failing
) -> None:  # type: ignore[no-untyped-def]
    """Fail closed for logins too, and tell the user why (banner and disconnect
    reason), not a bare "Permission denied"."""
    gw, _ = _setup(make_gateway, keys, tmp_path)
    failing.match = b""  # every write fails: the disk is full
    with pytest.raises(Exception, match="No space"):
        gw.call(gw.gateway.recorder.record("policy.reload", "success"))
    assert not gw.gateway.auditor_available()
    argv = ["sftp", "-b", "-", "-P", str(gw.port), *gw.ssh_options(), "alice@127.0.0.1"]
    argv[argv.index("LogLevel=ERROR")] = "LogLevel=INFO"
    result = subprocess.run(argv, input="ls /\n", capture_output=True, text=True, timeout=30)
    failing.match = None
    assert result.returncode != 0
    assert "audit journal unavailable" in result.stderr, result.stderr


@pytest.mark.parametrize("client", ["sftp", "scp"])
def test_a_login_whose_session_start_the_journal_refuses_is_cut(
    make_gateway, keys: dict[str, Path], tmp_path: Path, failing: Failing, client: str
) -> None:  # type: ignore[no-untyped-def]
    """The journal fails between two logins (disk full, folder removed): the
    next login is admitted while it still looks writable, and its own
    ``session.start`` is what finds the journal down. That session is cut with
    the reason, not kept unrecorded (it used to list and browse)."""
    gw, root = _setup(make_gateway, keys, tmp_path)
    assert gw.gateway.auditor_available()
    failing.match = b'"session.start"'
    if client == "sftp":
        argv = ["sftp", "-b", "-", "-P", str(gw.port), *gw.ssh_options(), "alice@127.0.0.1"]
        stdin = "ls /inbox\n"
    else:
        argv = ["scp", "-P", str(gw.port), *gw.ssh_options(), "alice@127.0.0.1:/inbox/keep.bin"]
        argv += [str(tmp_path / "copy.bin")]
        stdin = ""
    argv[argv.index("LogLevel=ERROR")] = "LogLevel=INFO"
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    assert failing.failed >= 1
    failing.match = None
    assert result.returncode != 0
    assert "audit journal unavailable" in result.stderr, result.stderr
    assert "keep.bin" not in result.stdout
    assert not (tmp_path / "copy.bin").exists()
    # the journal comes back; what it could not take is counted, and nothing
    # says the refused session read anything
    gw.call(gw.gateway.recorder.record("policy.reload", "success"))
    records = journal_records(root / "audit")
    alert = [r for r in records if r["type"] == "audit.alert"]
    assert alert and "event(s) were refused" in alert[-1]["reason"]
    assert not [r for r in records if r["type"] == "file.download"]
    # nor that it ended: an end whose start is not on record is a session
    # the journal never showed
    started = {r["session"] for r in records if r["type"] == "session.start"}
    ended = {r["session"] for r in records if r["type"] == "session.end"}
    assert ended <= started, ended - started
    (root / "conduit.toml").write_text(audited_policy(root, keys, 'on_failure = "closed"'))
    assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0


def test_a_session_that_ends_before_its_start_is_written_ends_after_it(
    make_gateway, keys: dict[str, Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Records are written in the background: a slow journal can still hold a
    login's ``session.start`` when the client has already left. Its
    ``session.end`` waits for it and follows it, never ahead of it."""
    gw, root = _setup(make_gateway, keys, tmp_path)
    recorder = gw.gateway.recorder
    own = recorder.record
    release = gw.call(_new_event())
    held: list[str] = []

    async def slow_start(type: str, outcome: str, **fields: Any) -> int:
        if type == "session.start":
            held.append(fields["session"])
            await release.wait()
        return int(await own(type, outcome, **fields))

    def of_held() -> list[dict[str, Any]]:
        return [r for r in journal_records(root / "audit") if held and r.get("session") == held[0]]

    recorder.record = slow_start
    try:
        result = gw.sftp("ls /inbox\n")
        assert result.returncode == 0, result.stderr
        assert held and not of_held()  # the client is gone, its start still held
    finally:
        gw.loop.call_soon_threadsafe(release.set)
    for _ in range(200):
        if len(of_held()) == 2:
            break
        time.sleep(0.05)
    recorder.record = own
    assert [r["type"] for r in of_held()] == ["session.start", "session.end"]
    (root / "conduit.toml").write_text(audited_policy(root, keys, 'on_failure = "closed"'))
    assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("client", ["scp", "scp-O", "sftp"])
def test_openssh_upload_refused_when_its_intent_fails(
    make_gateway, keys: dict[str, Path], tmp_path: Path, failing: Failing, client: str, err: int
) -> None:  # type: ignore[no-untyped-def]
    """Real OpenSSH clients: the commit intent fails to flush, nothing lands."""
    gw, root = _setup(make_gateway, keys, tmp_path)
    inbox = gw.area("inbox")
    before = _state(inbox)
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(100_000))
    failing.on, failing.errno, failing.match = "fdatasync", err, b'"outcome":"intent"'
    if client == "sftp":
        result = gw.sftp(f"put {src} /inbox/up.bin\n")
    else:
        result = gw.scp(str(src), ":/inbox/up.bin", legacy=client == "scp-O")
    failing.match = None
    assert failing.failed == 1
    assert result.returncode != 0
    if client == "scp-O":
        assert "audit journal unavailable" in result.stderr, result.stderr
    assert _state(inbox) == before  # no file, no temp file
    records = journal_records(root / "audit")
    assert not [r for r in records if r["type"] == "file.upload" and r["outcome"] == "intent"]
