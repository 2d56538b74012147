"""Connection floods against ``[gateway] workers = 2`` (``conduit serve``).

Admission is the supervisor's: connections opened and abandoned before they
authenticate count against one ``max_startups`` and one per-source limit for
the whole node, whichever worker holds them; honest OpenSSH clients from
another address are still served during a flood; and once the flood is gone
neither the supervisor nor a worker holds a descriptor more than before.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.gateway import test_workers
from tests.gateway.test_floods import FLOODER
from tests.gateway.test_workers import Served, children, conduit, of
from tests.support.gateway import random_file, sftp_argv, wait_for

served = test_workers.served  # the fixture: ``conduit serve`` with two workers

#: From the policy the ``served`` fixture writes.
MAX_STARTUPS = 16
PER_SOURCE = 10  # max_startups_per_source's default


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def all_fds(served: Served) -> dict[str, int]:
    pids = {"supervisor": served.process.pid}
    pids.update({f"worker{i}": pid for i, pid in children(served.process.pid).items()})
    return {name: fds(pid) for name, pid in pids.items()}


def no_more(now: dict[str, int], before: dict[str, int]) -> bool:
    """No process holds more descriptors than ``before`` (fewer: a session of
    the warm-up was still closing when it was counted)."""
    return now.keys() == before.keys() and all(now[k] <= before[k] for k in now)


def silent(port: int, source: str) -> socket.socket:
    """A TCP connection that never says a word (a handshake abandoned)."""
    return socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))


def banner(sock: socket.socket) -> bool:
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        return sock.recv(64).startswith(b"SSH-2.0-Conduit")
    return False


def open_now(sock: socket.socket) -> bool:
    """Still open on the gateway's side (no EOF or reset waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(4096, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def warm_up(served: Served, small: Path) -> dict[str, int]:
    """Both workers have served a session (they open the areas' folders on
    first use); their descriptors then, once the sessions are gone."""
    held = served.held()
    assert wait_for(lambda: len(served.sessions()) == 1, timeout=30)
    assert served.scp("alice", str(small), "GW:/inbox/warm.bin").returncode == 0
    assert held.stdin is not None
    held.stdin.close()
    assert held.wait(15) == 0
    assert {r["worker"] for r in served.sessions()} == {0, 1}
    assert wait_for(lambda: len(of(served.root, "session.end")) == 2)
    return all_fds(served)


def test_startup_limits_are_global_across_workers(served: Served, tmp_path: Path) -> None:
    small = random_file(tmp_path / "s.bin", 1000)
    before = warm_up(served, small)
    assert len(before) == 3
    flood: list[socket.socket] = []
    try:
        # one address: PER_SOURCE waiting connections for the node, not per worker
        three = [silent(served.port, "127.0.0.3") for _ in range(PER_SOURCE + 5)]
        flood += three
        assert sum(banner(s) for s in three) == PER_SOURCE
        # a second address fills the node: MaxStartups counts both workers'
        four = [silent(served.port, "127.0.0.4") for _ in range(PER_SOURCE)]
        flood += four
        assert sum(banner(s) for s in four) >= 1
        assert wait_for(lambda: sum(open_now(s) for s in flood) == MAX_STARTUPS, timeout=20), sum(
            open_now(s) for s in flood
        )
        # full, yet an address with nothing waiting is served (the heaviest
        # address's oldest waiting connection makes room)
        assert served.scp("alice", str(small), "GW:/inbox/full.bin").returncode == 0
    finally:
        for sock in flood:
            sock.close()
    assert wait_for(lambda: no_more(all_fds(served), before), timeout=30), (before, all_fds(served))
    served.process.terminate()
    served.process.wait(30)
    refused = [r for r in of(served.root, "connection.refused")]
    assert refused and {r["source"] for r in refused} <= {"127.0.0.3", "127.0.0.4"}


def test_honest_clients_are_served_during_a_flood(served: Served, tmp_path: Path) -> None:
    small = random_file(tmp_path / "s.bin", 1000)
    before = warm_up(served, small)
    flooder = subprocess.Popen(
        [
            *(sys.executable, str(FLOODER), str(served.port), "--source", "127.0.0.5"),
            *("--duration", "30", "--count", "6000", "--max-open", "200"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    results = []
    try:
        for i in range(6):
            assert flooder.poll() is None, "the flood is still on"
            if i % 2:
                put = served.scp("alice", str(small), f"GW:/inbox/h{i}.bin")
                results.append(put.returncode == 0)
            else:
                argv = sftp_argv(served.port, served.known, served.keys["alice"])
                listed = subprocess.run(
                    argv, input="ls /inbox\n", capture_output=True, text=True, timeout=90
                )
                results.append(listed.returncode == 0 and "warm.bin" in listed.stdout)
    finally:
        flooder.terminate()
        out, _ = flooder.communicate(timeout=30)
    flooded = json.loads(out) if out.strip() else {"attempts": 0}
    assert flooded["attempts"] > 200, flooded  # a real flood did happen
    # no honest login may be refused; one may time out on a very loaded machine
    assert sum(results) >= len(results) - 1, results
    # the flood's connections are gone: no descriptor stayed behind anywhere
    assert wait_for(lambda: no_more(all_fds(served), before), timeout=30), (before, all_fds(served))
    # and the gateway still answers
    assert served.scp("alice", str(small), "GW:/inbox/after.bin").returncode == 0
    served.process.terminate()
    served.process.wait(30)
    refused = of(served.root, "connection.refused")
    assert sum(int(r.get("count", 1)) for r in refused if r["source"] == "127.0.0.5") > 0
    assert not [r for r in refused if r["source"] == "127.0.0.1"]
    sessions = [r for r in of(served.root, "session.start", "success")]
    assert {r["worker"] for r in sessions} == {0, 1}
    verify = conduit("audit", "verify", "--config", str(served.config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
