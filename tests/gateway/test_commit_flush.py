"""A durable upload's commit through the gateway: the data flush overlaps the
commit intent's journal flush, and a data flush that fails after the intent is
durable leaves nothing and is journalled ``failed``.

The gateway runs in-process with its real journal and real clients (OpenSSH
``scp``, ``scp -O``, ``sftp``; asyncssh for the rendezvous). ``os.fsync`` is
wrapped for the upload's temp file only (no device here can fail a flush on
demand); the journal's flush goes through the file layer of
:mod:`conduit.audit.faults`, as in test_journal_faults.py.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from conduit.audit import faults
from conduit.cli.main import main
from conduit.storage import localfiles
from conduit.storage.localfiles import TEMP_PREFIX
from tests.gateway.test_audit_trail import audited_policy, journal_records

_fsync = os.fsync


def _is_upload_temp(fd: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(TEMP_PREFIX)
    except OSError:
        return False


def _setup(make_gateway, keys: dict[str, Path], tmp_path: Path) -> tuple[Any, Path]:  # type: ignore[no-untyped-def]
    root = tmp_path / "site"
    root.mkdir()
    gw = make_gateway(text=audited_policy(root, keys, 'on_failure = "closed"'), recorder="journal")
    (gw.area("inbox") / "keep.bin").write_bytes(b"k" * 100)
    return gw, root


def _upload_records(root: Path) -> list[dict[str, Any]]:
    return [r for r in journal_records(root / "audit") if r["type"] == "file.upload"]


def _verify(root: Path, keys: dict[str, Path]) -> int:
    (root / "conduit.toml").write_text(audited_policy(root, keys, 'on_failure = "closed"'))
    return main(["audit", "verify", "--config", str(root / "conduit.toml")])


@pytest.mark.parametrize("client", ["scp", "scp-O", "sftp"])
def test_a_data_flush_failing_after_the_intent_leaves_nothing_and_is_journalled_failed(
    make_gateway,
    keys: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    client: str,  # type: ignore[no-untyped-def]
) -> None:
    gw, root = _setup(make_gateway, keys, tmp_path)
    inbox = gw.area("inbox")
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(100_000))
    failed: list[int] = []

    def fsync(fd: int) -> None:
        if _is_upload_temp(fd):
            failed.append(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        _fsync(fd)

    monkeypatch.setattr(localfiles.os, "fsync", fsync)
    if client == "sftp":
        result = gw.sftp(f"put {src} /inbox/up.bin\n")
    else:
        result = gw.scp(str(src), ":/inbox/up.bin", legacy=client == "scp-O")
    monkeypatch.setattr(localfiles.os, "fsync", _fsync)
    assert failed  # the flush was reached, and failed
    assert result.returncode != 0
    assert sorted(os.listdir(inbox)) == ["keep.bin"]  # no file, no temp file
    records = _upload_records(root)
    intents = [r for r in records if r["outcome"] == "intent"]
    assert len(intents) == 1 and intents[0]["bytes"] == 100_000
    ends = [
        r["outcome"]
        for r in records
        if r.get("transfer") == intents[0]["transfer"] and r["outcome"] in ("success", "failed")
    ]
    assert ends == ["failed"]
    gw.call(gw.gateway.stop())
    assert _verify(root, keys) == 0


class Rendezvous(faults.FileOps):
    """The intent's journal flush and the upload's data flush each wait (bounded)
    for the other to have started: both in flight at once, or a note why not."""

    def __init__(self) -> None:
        self.intent_flushing = threading.Event()
        self.data_flushing = threading.Event()
        self.pending = False
        self.met: list[str] = []

    def write(self, fd: int, data: memoryview) -> int:
        self.pending = b'"outcome":"intent"' in bytes(data) and b"file.upload" in bytes(data)
        return super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        if self.pending:
            self.pending = False
            self.intent_flushing.set()
            if self.data_flushing.wait(5):
                self.met.append("intent saw data")
        super().fdatasync(fd)

    def fsync_data(self, fd: int) -> None:
        if _is_upload_temp(fd):
            self.data_flushing.set()
            if self.intent_flushing.wait(5):
                self.met.append("data saw intent")
        _fsync(fd)


def test_the_intent_and_the_data_are_flushed_at_once_then_renamed(
    make_gateway, keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    gw, root = _setup(make_gateway, keys, tmp_path)
    meet = Rendezvous()
    monkeypatch.setattr(faults, "fs", meet)
    monkeypatch.setattr(localfiles.os, "fsync", meet.fsync_data)

    async def scenario() -> None:
        async with gw.connect() as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("/inbox/up.bin", "wb") as f:
                await f.write(b"u" * 5000)

    gw.call(scenario())
    monkeypatch.setattr(localfiles.os, "fsync", _fsync)
    assert sorted(meet.met) == ["data saw intent", "intent saw data"]
    assert (gw.area("inbox") / "up.bin").read_bytes() == b"u" * 5000
    outcomes = [r["outcome"] for r in _upload_records(root)]
    assert outcomes[-2:] == ["intent", "success"], outcomes
    gw.call(gw.gateway.stop())
    assert _verify(root, keys) == 0
