"""The supervisor's journal fails while workers wait for its acks (ENOSPC, EIO).

``[gateway] workers = 2``: the supervisor runs in this process (its real
journal, whose file layer ``conduit.audit.faults.fs`` is swapped for one that
fails, as a full or failing disk would), its two workers are real worker
processes, the clients real OpenSSH ``scp``/``sftp``. Uploads are in flight on
both workers (their ``started`` records written) when the journal starts to
fail; each then needs its commit intent acked before its file may take its
final name. Fail closed: the clients hear an error, nothing lands, the journal
holds no effect it did not record; once the disk works again the journal
comes back by itself (the committer probes it) and the workers serve again.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import operator
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.audit import faults
from conduit.cli.main import main
from conduit.config import parse
from tests.gateway.test_audit_trail import audited_policy, journal_records
from tests.gateway.test_journal_faults import Failing
from tests.gateway.test_workers import children
from tests.support.gateway import RunningGateway, random_file, stop_gateway, wait_for


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Failing]:
    layer = Failing()
    monkeypatch.setattr(faults, "fs", layer)
    yield layer
    layer.match = None


def start_supervisor(root: Path, keys: dict[str, Path]) -> RunningGateway:
    """A supervisor with two workers, on a loop in a thread of this process."""
    from conduit.gateway.workers import Supervisor

    text = audited_policy(root, keys, 'on_failure = "closed"')
    text = text.replace("[gateway]\n", "[gateway]\nworkers = 2\n", 1)
    source = root / "conduit.toml"
    source.write_text(text)  # the workers read it
    config = parse(text, source=source)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    gateway = Supervisor(config)
    asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(30)
    host_key = gateway.host_keys[0].export_public_key().decode().strip()
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{gateway.port} {host_key}\n")
    return RunningGateway(
        config, gateway.port, root, known, gateway.recorder, loop, gateway, thread, keys
    )


@pytest.fixture
def supervised(keys: dict[str, Path], tmp_path: Path, failing: Failing) -> Iterator[RunningGateway]:
    root = tmp_path / "site"
    (root / "areas" / "inbox").mkdir(parents=True)
    for area in ("outbox", "inbox-archive"):
        (root / "areas" / area).mkdir()
    running = start_supervisor(root, keys)
    try:
        assert wait_for(lambda: len(children_of_this()) == 2, timeout=30), "two workers"
        yield running
    finally:
        failing.match = None
        if running.loop.is_running():
            stop_gateway(running)


def children_of_this() -> dict[int, int]:
    import os

    return children(os.getpid())


def upload(gw: RunningGateway, src: Path, client: str, rate: int = 0) -> subprocess.Popen[str]:
    """A real OpenSSH upload of ``src`` to /inbox, not waited for."""
    options = gw.ssh_options()
    name = f"/inbox/{src.name}"
    if client == "sftp":
        argv = ["sftp", "-b", "-", "-P", str(gw.port), *options]
        argv += [*(["-l", str(rate)] if rate else []), "alice@127.0.0.1"]
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert process.stdin is not None
        process.stdin.write(f"put {src} {name}\n")
        process.stdin.close()
        return process
    argv = ["scp", "-q", *(["-O"] if client == "scp-O" else []), "-P", str(gw.port), *options]
    argv += [*(["-l", str(rate)] if rate else []), str(src), f"alice@127.0.0.1:{name}"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def journal_back(gw: RunningGateway) -> bool:
    """The journal is writable again and every worker was told so (the
    supervisor checks every 0.25 s; until a worker hears it, it refuses
    logins as the journal last said)."""
    return gw.gateway.auditor_available() and all(w.ledger.told for w in gw.gateway.pool)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inbox_and_journal(gw: RunningGateway) -> tuple[dict[str, str], dict[str, str]]:
    """{name: sha256} of the files under /inbox, and of the uploads the journal
    says succeeded there."""
    records = journal_records(gw.root / "audit")
    done = {
        r["path"].rsplit("/", 1)[1]: r["sha256"]
        for r in records
        if r["type"] == "file.upload" and r["outcome"] == "success"
    }
    return {p.name: sha(p) for p in gw.area("inbox").iterdir()}, done


def inbox_agrees_with_journal(gw: RunningGateway) -> dict[str, str]:
    """Every file under /inbox has its ``success`` record with its digest, and
    every ``success`` record its file; no temp file is left. (An outcome is
    sent without waiting for it: it may follow the client's exit by a moment.)"""
    wait_for(lambda: operator.eq(*inbox_and_journal(gw)))
    present, done = inbox_and_journal(gw)
    assert present == done
    return done


@pytest.mark.parametrize(
    ("err", "on", "match"),
    [
        (errno.ENOSPC, "write", b""),  # the disk is full: every write fails
        (errno.EIO, "fdatasync", b'"outcome":"intent"'),  # a commit intent does not flush
    ],
    ids=["enospc-every-write", "eio-intent-flush"],
)
def test_journal_fails_under_uploads_in_flight_on_both_workers(
    supervised: RunningGateway, failing: Failing, tmp_path: Path, err: int, on: str, match: bytes
) -> None:
    gw = supervised
    clients = ["scp", "scp-O", "sftp", "scp"]
    srcs = [random_file(tmp_path / f"up{i}.bin", 600_000 + i) for i in range(len(clients))]
    # rate-limited (about 2 s each): all are in flight when the journal fails
    runs = [upload(gw, src, client, rate=2400) for src, client in zip(srcs, clients, strict=True)]
    try:
        started = wait_for(
            lambda: (
                len(
                    [
                        r
                        for r in journal_records(gw.root / "audit")
                        if r["type"] == "file.upload" and r["outcome"] == "started"
                    ]
                )
                == len(runs)
            ),
            timeout=30,
        )
        assert started, "every upload started before the fault"
        assert all(run.poll() is None for run in runs), "still in flight"
        failing.on, failing.errno, failing.match = on, err, match
        results = [run.wait(60) for run in runs]
        errors = [run.stderr.read() if run.stderr else "" for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait(10)
    assert all(code != 0 for code in results), (results, errors)
    assert failing.failed >= 1
    if match == b"":
        # the journal is down: the workers know it and refuse logins, saying why
        assert wait_for(lambda: not gw.gateway.auditor_available())
        argv = ["sftp", "-b", "-", "-P", str(gw.port), *gw.ssh_options(), "alice@127.0.0.1"]
        argv[argv.index("LogLevel=ERROR")] = "LogLevel=INFO"
        refused = subprocess.run(argv, input="ls /\n", capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0
        assert "audit journal unavailable" in refused.stderr, refused.stderr
    # nothing under a final name, no temp file, no intent or success written
    assert list(gw.area("inbox").iterdir()) == []
    records = journal_records(gw.root / "audit")
    ups = [r for r in records if r["type"] == "file.upload"]
    assert not [r for r in ups if r["outcome"] in ("intent", "success")], ups
    # the disk works again: the journal comes back by itself, the workers serve
    failing.match = None
    assert wait_for(lambda: journal_back(gw), timeout=15)
    again = [random_file(tmp_path / f"again{i}.bin", 50_000 + i) for i in range(4)]
    late = [upload(gw, src, client) for src, client in zip(again, clients, strict=True)]
    assert [run.wait(60) for run in late] == [0] * len(late)
    done = inbox_agrees_with_journal(gw)
    assert sorted(done) == sorted(src.name for src in again)
    records = journal_records(gw.root / "audit")
    served_by = {r["worker"] for r in records if r["type"] == "session.start" and "worker" in r}
    assert served_by == {0, 1}
    assert [r for r in records if r["type"] == "audit.alert" and "writable again" in r["reason"]]
    stop_gateway(gw)
    inbox_agrees_with_journal(gw)  # recovery at close settled nothing into a file
    assert main(["audit", "verify", "--config", str(gw.root / "conduit.toml")]) == 0


@pytest.mark.parametrize("client", ["scp-O", "sftp"])
def test_a_start_sent_ahead_and_refused_stops_its_upload(
    supervised: RunningGateway, failing: Failing, tmp_path: Path, client: str
) -> None:
    """A worker sends an upload's ``started`` without waiting for its answer
    (its commit intent, awaited, carries the refusal): the disk fills exactly
    on that record. The upload must fail; no intent, no file, no outcome of a
    transfer the journal never saw start."""
    gw = supervised
    src = random_file(tmp_path / "ahead.bin", 300_000)
    failing.on, failing.errno, failing.match = "write", errno.ENOSPC, b'"outcome":"started"'
    run = upload(gw, src, client)
    assert run.wait(60) != 0
    failing.match = None
    assert failing.failed >= 1
    assert list(gw.area("inbox").iterdir()) == []
    ups = [r for r in journal_records(gw.root / "audit") if r["type"] == "file.upload"]
    assert ups == [], ups
    # the journal came back (its probe writes no "started"); the next one lands
    assert wait_for(lambda: journal_back(gw), timeout=15)
    again = upload(gw, src, client)
    assert again.wait(60) == 0, again.stderr.read() if again.stderr else ""
    assert inbox_agrees_with_journal(gw) == {"ahead.bin": sha(src)}
    stop_gateway(gw)
    assert main(["audit", "verify", "--config", str(gw.root / "conduit.toml")]) == 0
