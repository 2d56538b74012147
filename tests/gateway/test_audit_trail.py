"""The real audit journal behind the gateway: real scp, a real syslog receiver, verify, faults."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.cli.main import main
from tests.audit.syslog_listener import Listener
from tests.support.gateway import (
    policy_text,
    random_file,
    scp_argv,
    serve_process,
    sha256,
    wait_for,
)


def journal_records(folder: Path) -> list[dict]:  # type: ignore[type-arg]
    records = []
    for path in sorted(folder.glob("journal-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


async def recorded(folder: Path, type_: str) -> None:
    """Wait (at most 10 s) until the journal in ``folder`` holds a ``type_`` record.

    A fault armed under an open session waits for its ``session.start``: the
    gateway's records are not written strictly in issue order (a durable
    intent goes to the flusher past a queued ``session.start``), and a start
    the journal refuses cuts the session instead of the operation under test."""
    for _ in range(200):
        if any(r["type"] == type_ for r in journal_records(folder)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {type_} record in {folder}")


@pytest.fixture
def siem() -> Iterator[tuple[Listener, asyncio.AbstractEventLoop]]:
    """A real TCP syslog receiver on loopback, on its own event loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    listener = asyncio.run_coroutine_threadsafe(Listener("tcp").start(), loop).result(10)
    yield listener, loop
    asyncio.run_coroutine_threadsafe(listener.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def audited_policy(root: Path, keys: dict[str, Path], audit: str) -> str:
    return policy_text(root, keys) + f'\n[audit]\njournal = "{root}/audit"\n{audit}\n'


def test_upload_is_journaled_sent_to_siem_and_verifies(
    make_gateway,
    keys: dict[str, Path],
    tmp_path: Path,
    siem,
    legacy: bool,  # type: ignore[no-untyped-def]
) -> None:
    listener, _ = siem
    root = tmp_path / "site"
    root.mkdir()
    text = audited_policy(
        root, keys, f'[[audit.siem]]\ntarget = "{listener.target}"\nformat = "rfc5424"\n'
    )
    gw = make_gateway(text=text, recorder="journal")
    src = random_file(tmp_path / "fw.bin", 700_000)
    assert gw.scp(str(src), ":/inbox/", legacy=legacy).returncode == 0
    digest = sha256(src)
    uploads = [
        r
        for r in journal_records(root / "audit")
        if r.get("type") == "file.upload" and r.get("outcome") == "success"
    ]
    assert len(uploads) == 1 and uploads[0]["sha256"] == digest  # durable before success
    assert uploads[0]["principal"] == "alice" and uploads[0]["path"] == "/inbox/fw.bin"
    assert wait_for(lambda: any(digest.encode() in m for m in listener.messages), timeout=15)
    (root / "conduit.toml").write_text(text)
    assert main(["audit", "verify", "--config", str(root / "conduit.toml")]) == 0


def test_closed_mode_refuses_transfers_when_journal_breaks(
    make_gateway,
    keys: dict[str, Path],
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    root = tmp_path / "site"
    root.mkdir()
    gw = make_gateway(text=audited_policy(root, keys, 'on_failure = "closed"'), recorder="journal")
    src = random_file(tmp_path / "a.bin", 1000)
    assert gw.scp(str(src), ":/inbox/", legacy=True).returncode == 0
    # The journal's folder disappears (disk unmounted, folder replaced).
    shutil.move(root / "audit", root / "audit-gone")
    (root / "audit").write_text("not a folder")
    result = gw.scp(str(src), ":/inbox/b.bin", legacy=True)
    assert result.returncode != 0
    assert not (gw.area("inbox") / "b.bin").exists()
    # Either the transfer was refused with the reason, or - once the journal
    # had already noticed (e.g. writing the previous session's end) - the
    # login itself was.
    assert "audit journal unavailable" in result.stderr or not gw.gateway.auditor_available()
    assert not gw.gateway.auditor_available()


def test_gateway_killed_mid_transfer_leaves_a_failed_record(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "site"
    root.mkdir()
    text = audited_policy(root, keys, "").replace(
        'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\nnode = "gw-test"'
    )
    config = root / "conduit.toml"
    config.write_text(text)

    gateway, port, known = serve_process(config)
    src = random_file(tmp_path / "big.img", 32 * 1024 * 1024)
    client = subprocess.Popen(
        scp_argv(
            port, known, keys["alice"], "-l", "16000", str(src), "alice@127.0.0.1:/inbox/big.img"
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        inbox = root / "areas" / "inbox"
        assert wait_for(lambda: any(e.stat().st_size > 0 for e in inbox.iterdir()), timeout=20)
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(10)
    finally:
        client.kill()
        client.wait(10)
    restarted, _, _ = serve_process(config)  # recovery happens on open
    restarted.send_signal(signal.SIGTERM)
    assert restarted.wait(15) == 0
    records = journal_records(root / "audit")
    started = [r for r in records if r.get("type") == "file.upload" and r["outcome"] == "started"]
    assert len(started) == 1
    ends = [
        r
        for r in records
        if r.get("transfer") == started[0]["transfer"]
        and r is not started[0]
        and r["outcome"] != "started"
    ]
    assert [r["outcome"] for r in ends] == ["failed"]  # never a phantom success
    # the record says how far it got: the bytes that had reached the temp file
    assert ends[0]["bytes"] > 0 and "byte(s) had arrived" in ends[0]["note"]
    ends_of_session = [
        r for r in records if r["type"] == "session.end" and r["session"] == started[0]["session"]
    ]
    assert [r["outcome"] for r in ends_of_session] == ["failed"]
    assert not (inbox / "big.img").exists() and os.listdir(inbox) == []  # orphan swept
    assert main(["audit", "verify", "--config", str(config)]) == 0
