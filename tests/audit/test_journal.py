import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conduit.audit import AuditUnavailable, flushplace, verify
from conduit.audit.auditor import BATCH_SYNC_INTERVAL, PROBE_INTERVAL
from conduit.audit.checkpoint import load_public_key
from conduit.audit.journal import JournalBusy, journal_files


def records(directory: Path) -> list[dict]:
    out = []
    for path in journal_files(directory):
        out += [json.loads(line) for line in path.read_bytes().splitlines()]
    return out


def pub(tmp_path: Path):
    return load_public_key(tmp_path / "audit_ed25519.pub")


async def test_record_returns_consecutive_seqs_and_verifies(make_auditor, tmp_path):
    auditor = await make_auditor()
    seqs = [await auditor.record("session.start", "success", principal="alice") for _ in range(3)]
    assert seqs == [2, 3, 4]  # seq 1: the signed checkpoint written at open
    await auditor.close()
    recs = records(tmp_path / "audit")
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[0]["type"] == "audit.checkpoint" and recs[0]["reason"] == "start"
    assert recs[-1]["type"] == "audit.checkpoint" and recs[-1]["reason"] == "close"
    assert recs[0]["node"] == "gw-1" and recs[0]["ts"].endswith("Z") and len(recs[0]["ts"]) == 27
    report = verify(tmp_path / "audit", pub(tmp_path))
    assert report.ok, report.broken
    assert report.records == 5 and report.unsealed == 0


async def test_concurrent_writers_share_fsyncs_without_gaps(make_auditor, tmp_path, monkeypatch):
    fsyncs = 0
    real = os.fsync

    def counting(fd):
        nonlocal fsyncs
        fsyncs += 1
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    monkeypatch.setattr(os, "fdatasync", counting)
    auditor = await make_auditor(fsync="always")
    seqs = await asyncio.gather(
        *[auditor.record("file.upload", "success", path=f"/f/{i}") for i in range(200)]
    )
    assert sorted(seqs) == list(range(2, 202))
    assert fsyncs < 50  # group commit: far fewer fsyncs than records
    await auditor.close()
    assert verify(tmp_path / "audit", pub(tmp_path)).ok


async def test_one_writer_each_durable_record_is_flushed_before_it_returns(
    make_auditor, tmp_path, monkeypatch
):
    flushed: list[int] = []
    real = os.fdatasync

    def counting(fd):
        real(fd)
        flushed.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fdatasync", counting)
    auditor = await make_auditor(fsync="always")
    journal = journal_files(tmp_path / "audit")[-1]
    for i in range(20):
        before = len(flushed)
        await auditor.record("file.upload", "started", durable=False, transfer=f"t{i}")
        assert len(flushed) == before  # a started record waits for no flush
        await auditor.record("file.upload", "success", transfer=f"t{i}", path=f"/f/{i}")
        # flushed before record() returned, up to and including this record
        assert len(flushed) == before + 1 and flushed[-1] == journal.stat().st_size
    await auditor.close()
    assert verify(tmp_path / "audit", pub(tmp_path)).ok


async def test_a_slow_disk_is_flushed_off_the_event_loop(make_auditor, tmp_path, monkeypatch):
    """Fast flushes may run on the loop; slow ones must not stall every session."""
    real = os.fdatasync

    def slow(fd):
        time.sleep(0.05)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow)
    auditor = await make_auditor(fsync="always")
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        for i in range(3):
            before = ticks
            assert await auditor.record("file.upload", "success", path=f"/f/{i}") == i + 2
            assert ticks - before >= 5, "the event loop stood still during a 50 ms flush"
    finally:
        task.cancel()
    await auditor.close()
    assert verify(tmp_path / "audit", pub(tmp_path)).ok


async def test_flushes_timed_in_the_thread_do_not_keep_it_there(
    make_auditor, tmp_path, monkeypatch
):
    """The flusher thread's timings include its waits for the GIL while the loop
    is busy; only flushes on the loop may decide where the next ones run. Here
    the disk is slow as seen from the thread and fast on the loop: the records
    must come back to the loop (they stayed in the thread when its timings counted)."""
    monkeypatch.setattr(flushplace, "PROBE_MIN", 0.01)
    on_loop: list[bool] = []

    def flush(fd):
        on_loop.append(threading.current_thread() is threading.main_thread())
        if not on_loop[-1]:
            time.sleep(0.005)

    monkeypatch.setattr(os, "fdatasync", flush)
    auditor = await make_auditor(fsync="always")
    for i in range(60):
        await auditor.record("file.upload", "success", path=f"/f/{i}")
    assert len(on_loop) >= 60 and all(on_loop[-20:])
    await auditor.close()
    assert verify(tmp_path / "audit", pub(tmp_path)).ok


async def test_a_slow_disk_is_probed_on_the_loop_rarely(make_auditor, tmp_path, monkeypatch):
    """While the flusher thread flushes, the loop flushes one record now and then
    to see if the disk got fast again: for a 20 ms flush, at most once per second."""
    on_loop: list[bool] = []

    def slow(fd):
        on_loop.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.02)

    monkeypatch.setattr(os, "fdatasync", slow)
    auditor = await make_auditor(fsync="always")
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        await auditor.record("file.upload", "success", path="/f/x")
    # the first probe is due 0.5 s after open, the next 1 s (50 x 20 ms) after it
    assert 1 <= sum(on_loop) <= 2 < len(on_loop)
    await auditor.close()
    assert verify(tmp_path / "audit", pub(tmp_path)).ok


async def test_a_disk_slow_in_the_thread_is_not_probed_on_the_loop(
    make_auditor, tmp_path, monkeypatch
):
    """A flush the thread saw take 60 ms is no GIL wait: the disk is slow or
    hanging, and a probe on the loop would stall every session that long."""
    on_loop: list[bool] = []

    def slow(fd):
        on_loop.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.06)

    monkeypatch.setattr(os, "fdatasync", slow)
    auditor = await make_auditor(fsync="always")
    end = time.monotonic() + 1.2  # a probe would be due 0.5 s after open
    while time.monotonic() < end:
        await auditor.record("file.upload", "success", path="/f/x")
    assert len(on_loop) > 5 and not any(on_loop)
    await auditor.close()
    assert verify(tmp_path / "audit", pub(tmp_path)).ok


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
async def test_rotation_keeps_the_chain(make_auditor, tmp_path, fsync):
    auditor = await make_auditor(rotate_size=2000, fsync=fsync)
    for i in range(60):
        await auditor.record("file.download", "success", path=f"/logs/{i}.log", bytes=i)
    await auditor.close()
    files = journal_files(tmp_path / "audit")
    assert len(files) > 3
    assert [p.name for p in files][:2] == ["journal-000001.jsonl", "journal-000002.jsonl"]
    report = verify(tmp_path / "audit", pub(tmp_path))
    assert report.ok, report.broken
    assert report.files == len(files)
    assert [r["seq"] for r in records(tmp_path / "audit")] == list(range(1, report.last_seq + 1))


async def test_interval_checkpoints(make_auditor, tmp_path):
    auditor = await make_auditor(checkpoint_interval=0.1)
    await auditor.record("gateway.start", "success")
    await asyncio.sleep(0.4)
    recs = records(tmp_path / "audit")
    assert any(r["type"] == "audit.checkpoint" and r["reason"] == "interval" for r in recs)
    await auditor.close()


async def test_reopen_continues_sequence_and_chain(make_auditor, tmp_path):
    a = await make_auditor()
    await a.record("gateway.start", "success")
    await a.close()
    b = await make_auditor()
    # 1 start checkpoint, 2 gateway.start, 3 close checkpoint, 4 start checkpoint
    assert await b.record("gateway.stop", "success") == 5
    await b.close()
    assert verify(tmp_path / "audit", pub(tmp_path)).ok


async def test_close_fails_transfers_left_open(make_auditor, tmp_path):
    a = await make_auditor()
    await a.record("file.upload", "started", transfer="t1", path="/fw/a.bin", principal="bob")
    await a.close()
    last = [r for r in records(tmp_path / "audit") if r.get("transfer") == "t1"][-1]
    assert last["outcome"] == "failed" and last["error"] == "gateway stopped during transfer"
    assert last["principal"] == "bob" and last["path"] == "/fw/a.bin"


# -- journal cannot be written ---------------------------------------------------


def break_folder(directory: Path) -> Path:
    aside = directory.with_name("audit.aside")
    directory.rename(aside)
    directory.write_text("not a folder")
    return aside


def mend_folder(directory: Path, aside: Path) -> None:
    directory.unlink()
    aside.rename(directory)


async def test_closed_mode_refuses_with_reason_until_writable(make_auditor, tmp_path):
    directory = tmp_path / "audit"
    auditor = await make_auditor(on_failure="closed")
    await auditor.record("gateway.start", "success")
    aside = break_folder(directory)
    with pytest.raises(AuditUnavailable, match="cannot be written"):
        await auditor.record("session.start", "success", principal="alice")
    assert not auditor.available
    mend_folder(directory, aside)
    for _ in range(50):
        if auditor.available:
            break
        await asyncio.sleep(0.1)
    assert auditor.available
    seq = await auditor.record("session.start", "success", principal="alice")
    await auditor.close()
    recs = records(directory)
    alert = [r for r in recs if r["type"] == "audit.alert"]
    assert (
        alert
        and "writable again" in alert[0]["reason"]
        and "1 event(s) were refused" in (alert[0]["reason"])
    )
    assert seq == alert[0]["seq"] + 1
    assert verify(directory, pub(tmp_path)).ok


@pytest.mark.parametrize("on_failure", ["closed", "alert"])
@pytest.mark.parametrize("how", ["folder removed", "folder replaced by a file"])
async def test_a_journal_that_stays_down_is_probed_not_spun_on(
    make_auditor, tmp_path, on_failure, how
):
    """While the journal cannot be written the committer looks again every
    PROBE_INTERVAL, nothing more: its sync and checkpoint times pass during the
    outage and must not turn the probe into a loop that burns a core (a gateway
    whose data folder vanished did, for every session it still served)."""
    directory = tmp_path / "audit"
    auditor = await make_auditor(on_failure=on_failure)
    await auditor.record("gateway.start", "success")
    if how == "folder removed":
        shutil.rmtree(directory)
    else:
        break_folder(directory)
    looks = 0
    ensure = auditor.journal._ensure_writable

    def counted():  # type: ignore[no-untyped-def]
        nonlocal looks
        looks += 1
        return ensure()

    auditor.journal._ensure_writable = counted  # type: ignore[method-assign]
    try:
        await auditor.record("session.start", "success", principal="alice")
    except AuditUnavailable:
        assert on_failure == "closed"
    assert auditor._outage.reason is not None
    window = 3 * BATCH_SYNC_INTERVAL  # the sync time (and its retry) passes inside it
    await asyncio.sleep(window)
    assert looks <= window / PROBE_INTERVAL + 3, f"{looks} looks at the journal in {window} s"
    assert looks >= 2  # it does keep probing
    await auditor.close()


async def test_alert_mode_goes_on_and_alerts_later(make_auditor, tmp_path):
    directory = tmp_path / "audit"
    auditor = await make_auditor(on_failure="alert")
    await auditor.record("gateway.start", "success")
    aside = break_folder(directory)
    assert await auditor.record("file.upload", "success", path="/fw/held.bin") == 0
    assert auditor.available
    mend_folder(directory, aside)
    await asyncio.sleep(1.0)
    await auditor.record("session.end", "success")
    await auditor.close()
    recs = records(directory)[1:]  # after the start checkpoint
    types = [r["type"] for r in recs]
    assert types[:4] == ["gateway.start", "audit.alert", "file.upload", "session.end"]
    assert "1 held event(s) follow" in recs[1]["reason"]
    assert verify(directory, pub(tmp_path)).ok


# -- SIGKILL mid-write -------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    from conduit.audit import Auditor
    from conduit.config.model import AuditConfig

    async def main():
        base = Path(sys.argv[1])
        a = await Auditor.open(AuditConfig(journal=base / "audit"), node="gw", key_dir=base)
        await a.record("file.upload", "started", transfer="t-9", path="/fw/big.bin")
        await a.record("file.upload", "started", transfer="t-1", path="/fw/ok.bin")
        await a.record("file.upload", "success", transfer="t-1", path="/fw/ok.bin")
        print("ready", flush=True)
        i = 0
        while True:
            await a.record("file.download", "success", path=f"/logs/{i}" * 20)
            i += 1

    asyncio.run(main())
    """
)


async def test_sigkill_mid_write_then_reopen(make_auditor, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, env=env
    )
    assert child.stdout.readline().strip() == b"ready"
    await asyncio.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    # make the crash tear the last line, as a kill inside write() would
    active = journal_files(tmp_path / "audit")[-1]
    with active.open("ab") as f:
        f.write(b'{"seq":999999,"ts":"2026-')
    assert verify(tmp_path / "audit", pub(tmp_path)).ok  # torn tail: a note, not a fault

    auditor = await make_auditor()
    await auditor.close()
    report = verify(tmp_path / "audit", pub(tmp_path))
    assert report.ok, report.broken
    recs = records(tmp_path / "audit")
    t9 = [r for r in recs if r.get("transfer") == "t-9"]
    assert [r["outcome"] for r in t9] == ["started", "failed"]
    assert t9[1]["error"] == "gateway stopped during transfer"
    assert [r["outcome"] for r in recs if r.get("transfer") == "t-1"] == ["started", "success"]
    alerts = [r for r in recs if r["type"] == "audit.alert"]
    assert "moved aside" in alerts[0]["reason"]
    assert (
        tmp_path / "audit" / (active.name + ".torn")
    ).read_bytes() == b'{"seq":999999,"ts":"2026-'


DISK_FULL = textwrap.dedent(
    """
    import asyncio, resource, sys
    from pathlib import Path
    from conduit.audit import Auditor, AuditUnavailable
    from conduit.config.model import AuditConfig

    async def main():
        base = Path(sys.argv[1])
        a = await Auditor.open(AuditConfig(journal=base / "audit"), node="gw", key_dir=base)
        await a.record("gateway.start", "success")
        size = a.journal.path.stat().st_size
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 700, hard))
        refused = 0
        for i in range(20):
            try:
                await a.record("file.upload", "success", path="/fw/" + "x" * 150 + str(i))
            except AuditUnavailable as exc:
                refused += 1
                reason = str(exc)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        print(refused, a.available, reason, flush=True)
        for _ in range(50):
            if a.available:
                break
            await asyncio.sleep(0.1)
        await a.record("gateway.stop", "success")
        await a.close()

    asyncio.run(main())
    """
)


def test_disk_full_mid_batch_leaves_no_gap_and_no_partial_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    out = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(tmp_path)], capture_output=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()
    refused, available, reason = out.stdout.decode().split(" ", 2)
    assert int(refused) > 10 and available == "False" and "File too large" in reason
    report = verify(tmp_path / "audit", pub(tmp_path))
    assert report.ok, report.broken
    recs = records(tmp_path / "audit")
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert any("refused" in r.get("reason", "") for r in recs if r["type"] == "audit.alert")


async def test_one_writer_per_journal(make_auditor, tmp_path):
    first = await make_auditor()
    with pytest.raises(JournalBusy, match=f"in use by process {os.getpid()}"):
        await make_auditor()
    await first.record("session.start", "success", principal="alice")
    await first.close()
    again = await make_auditor()  # closing let go of the folder
    await again.record("session.end", "success", principal="alice")
    await again.close()
    assert verify(tmp_path / "audit", pub(tmp_path)).ok
