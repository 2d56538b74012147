"""``[gateway] workers = 2`` with real OpenSSH clients against ``conduit serve``:
one journal chain for both workers, a worker's death costs only its own
connections, reload and the per-user session limit reach across workers, and
no worker outlives its supervisor."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import (
    conduit_env,
    policy_text,
    random_file,
    scp_argv,
    serve_process,
    sftp_argv,
    wait_for,
)


def journal(root: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted((root / "data" / "audit").glob("journal-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


def of(root: Path, type_: str, outcome: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in journal(root)
        if r["type"] == type_ and (outcome is None or r["outcome"] == outcome)
    ]


def conduit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conduit", *args],
        capture_output=True,
        text=True,
        env=conduit_env(),
        timeout=60,
    )


def children(pid: int) -> dict[int, int]:
    """The live worker processes of ``pid``: {worker index: pid}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z" and b"conduit.gateway.worker" in argv:
            found[int(argv[argv.index(b"--index") + 1])] = int(entry.name)
    return found


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


@dataclass
class Served:
    root: Path
    config: Path
    text: str
    process: subprocess.Popen[str]
    port: int
    known: Path
    keys: dict[str, Path]

    def held(self, user: str = "alice") -> subprocess.Popen[str]:
        """An sftp session that stays open until its stdin closes."""
        argv = sftp_argv(self.port, self.known, self.keys[user], user)
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def sessions(self, user: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in of(self.root, "session.start", "success")
            if user is None or r["principal"] == user
        ]

    def scp(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = scp_argv(self.port, self.known, self.keys[user], *args)
        argv = [a.replace("GW:", f"{user}@127.0.0.1:") for a in argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture
def served(
    keys: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Served]:
    per_user = getattr(request, "param", 16)  # max_sessions_per_user
    root = tmp_path / "site"
    root.mkdir()
    for area in ("inbox", "outbox", "inbox-archive"):
        (root / "areas" / area).mkdir(parents=True)
    config = root / "conduit.toml"
    text = policy_text(root, keys).replace("[gateway]\n", "[gateway]\nworkers = 2\n", 1)
    text = text.replace(
        "[gateway.limits]\n", f"[gateway.limits]\nmax_sessions_per_user = {per_user}\n"
    )
    config.write_text(text)
    with (tmp_path / "console.txt").open("w") as err:
        process, port, known = serve_process(config, stderr=err)
    try:
        assert wait_for(lambda: len(children(process.pid)) == 2, timeout=30), "two workers"
        yield Served(root, config, text, process, port, known, keys)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(15)


def _close(*sessions: subprocess.Popen[str]) -> None:
    for session in sessions:
        if session.poll() is None:
            assert session.stdin is not None
            session.stdin.close()
            session.wait(15)


def test_both_workers_write_one_chain(served: Served, tmp_path: Path) -> None:
    first = served.held()
    assert wait_for(lambda: len(served.sessions()) == 1, timeout=30)
    # the first holds a connection: the next ones go to the other worker first
    srcs = [random_file(tmp_path / f"f{i}.bin", 200_000 + i) for i in range(4)]
    runs = [
        subprocess.Popen(
            scp_argv(
                served.port,
                served.known,
                served.keys["alice"],
                str(src),
                f"alice@127.0.0.1:/inbox/{src.name}",
            ),
            stderr=subprocess.PIPE,
        )
        for src in srcs
    ]
    assert [run.wait(60) for run in runs] == [0] * 4
    _close(first)
    for src in srcs:
        assert (served.root / "areas" / "inbox" / src.name).read_bytes() == src.read_bytes()
    assert {r["worker"] for r in served.sessions()} == {0, 1}
    # an outcome is deferred (handoff.LINGER) and rides the next datagram: it
    # may land just after the client heard its upload was done
    assert wait_for(lambda: len(of(served.root, "file.upload", "success")) == 4, timeout=10)
    assert len(of(served.root, "file.upload", "success")) == 4
    verify = conduit("audit", "verify", "--config", str(served.config))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_killed_worker_costs_only_its_own_sessions(served: Served, tmp_path: Path) -> None:
    other = served.held()
    assert wait_for(lambda: len(served.sessions()) == 1, timeout=30)
    src = random_file(tmp_path / "big.bin", 20_000_000)
    argv = scp_argv(served.port, served.known, served.keys["alice"], "-l", "4000")
    upload = subprocess.Popen(
        [*argv, str(src), "alice@127.0.0.1:/inbox/big.bin"], stderr=subprocess.PIPE
    )
    started = wait_for(lambda: of(served.root, "file.upload", "started"), timeout=20)
    assert started, "the upload started"
    index = served.sessions()[-1]["worker"]
    assert index != served.sessions()[0]["worker"]
    victim = children(served.process.pid)[index]
    os.kill(victim, signal.SIGKILL)
    assert upload.wait(30) != 0
    deaths = wait_for(lambda: of(served.root, "gateway.worker", "failed"))
    assert deaths and deaths[0]["worker"] == index and deaths[0]["sessions"] == 1
    assert "SIGKILL" in deaths[0]["reason"]
    # nothing under the final name; the other worker's session goes on
    assert not (served.root / "areas" / "inbox" / "big.bin").exists()
    small = random_file(tmp_path / "small.bin", 1000)
    assert other.stdin is not None
    other.stdin.write(f"put {small} /inbox/small.bin\n")
    other.stdin.flush()
    assert wait_for(lambda: (served.root / "areas" / "inbox" / "small.bin").exists())
    _close(other)
    assert other.returncode == 0
    # the dead worker was replaced: a new login is served
    assert wait_for(
        lambda: (
            index in children(served.process.pid) and children(served.process.pid)[index] != victim
        )
    )
    assert served.scp("alice", str(small), "GW:/inbox/again.bin").returncode == 0
    # the dead worker's session ended in the journal at once, as recovery would
    dead = started[0]["session"]
    ends = [r for r in of(served.root, "session.end", "failed") if r["session"] == dead]
    assert ends and ends[0]["error"] == "worker process died during the session"
    verify = conduit("audit", "verify", "--config", str(served.config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # its upload (a temp file, no commit intent) is settled against the storage
    # when the journal closes: failed, nothing under the final name
    served.process.terminate()
    served.process.wait(30)
    transfer = started[0]["transfer"]
    outcome = [r for r in of(served.root, "file.upload") if r.get("transfer") == transfer]
    assert [r["outcome"] for r in outcome][-1] == "failed"
    assert not (served.root / "areas" / "inbox" / "big.bin").exists()
    assert conduit("audit", "verify", "--config", str(served.config)).returncode == 0


@pytest.mark.parametrize("via", ["control", "signal"])
def test_reload_reaches_every_worker(served: Served, tmp_path: Path, via: str) -> None:
    bob = served.held("bob")
    assert wait_for(lambda: len(served.sessions()) == 1, timeout=30)
    alice = served.held("alice")
    assert wait_for(lambda: len(served.sessions()) == 2, timeout=30)
    assert {r["worker"] for r in served.sessions()} == {0, 1}
    text = served.text.split("[users.bob]")[0]
    served.config.write_text(text)
    if via == "control":  # answered once every worker has reloaded
        reloaded = conduit("reload", "--config", str(served.config))
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    else:
        served.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: of(served.root, "session.revoke"), timeout=30)
    # bob's open session, in whichever worker, was revoked by that worker
    revoked = of(served.root, "session.revoke")
    assert [r["principal"] for r in revoked] == ["bob"]
    assert bob.stdin is not None  # sftp notices the closed connection at its next command
    with contextlib.suppress(BrokenPipeError):
        bob.stdin.write("ls /inbox\n")
        bob.stdin.close()
    assert bob.wait(15) != 0
    src = random_file(tmp_path / "a.bin", 100)
    # bob's new logins are refused by both workers (each takes one in turn:
    # alice holds one connection, so the least loaded alternates); after a
    # SIGHUP nothing says when the other worker is done, so only "control"
    for _ in range(2 if via == "control" else 0):
        assert served.scp("bob", str(src), "GW:/inbox/b.bin").returncode != 0
    assert not (served.root / "areas" / "inbox" / "b.bin").exists()
    _close(alice)
    assert alice.returncode == 0


@pytest.mark.parametrize("served", [2], indirect=True)
def test_the_per_user_session_limit_counts_across_workers(served: Served) -> None:
    one, two = served.held(), None
    try:
        assert wait_for(lambda: len(served.sessions()) == 1, timeout=30)
        two = served.held()
        assert wait_for(lambda: len(served.sessions()) == 2, timeout=30)
        assert {r["worker"] for r in served.sessions()} == {0, 1}
        # max_sessions_per_user = 2: a third session is refused, whichever worker
        third = subprocess.run(
            sftp_argv(served.port, served.known, served.keys["alice"]),
            input="ls /inbox\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert third.returncode != 0
        _close(one)
        fourth = subprocess.run(
            sftp_argv(served.port, served.known, served.keys["alice"]),
            input="ls /inbox\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert fourth.returncode == 0, fourth.stderr
    finally:
        _close(one, *([two] if two else []))


def test_workers_die_with_the_supervisor(served: Served) -> None:
    workers = list(children(served.process.pid).values())
    assert len(workers) == 2
    served.process.kill()
    served.process.wait(10)
    assert wait_for(lambda: not any(alive(pid) for pid in workers), timeout=10)
