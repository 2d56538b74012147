"""Where a single big stream's seconds go: CPU per GiB of each side, and builds alternating.

For each 1 GiB row (scp / scp -O / sftp, up and down) this runs sshd and one or
more Conduit builds, alternating in the same minutes, and prints per transfer:
wall time, the server's CPU (user + system, all threads; for Conduit split into
its event loop thread and the rest: hashing/IO workers), the client's CPU, all
in seconds per GiB. sshd forks per connection: its CPU is the master's reaped
children's (``cutime + cstime``), read once they are reaped.

Usage::

    python bench/bench_stream.py --runs 3                       # this tree's src
    python bench/bench_stream.py --build old=/tmp/old/src --build new=src --runs 4

A build is a ``src`` folder; ``conduit`` is imported from it. Nothing here is
a pass/fail: it prints figures (medians at the end) for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gateway as bg

TICK = os.sysconf("SC_CLK_TCK")


def proc_times(pid: int, task: int | None = None) -> tuple[float, float, float, float]:
    """utime, stime, cutime, cstime of a process (or one of its threads), seconds."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    f = Path(path).read_text().rsplit(")", 1)[1].split()
    return tuple(int(x) / TICK for x in f[11:15])  # type: ignore[return-value]


class Stream(bg.Bench):
    def __init__(self, args: argparse.Namespace, builds: dict[str, Path]) -> None:
        super().__init__(args)
        self.builds = builds

    def setup(self) -> None:
        # Let Bench start sshd and the first build, then the other builds.
        names = list(self.builds)
        first = names[0]
        bg.REPO = self.builds[first].parent
        super().setup()
        conduit = self.servers.pop("Conduit")
        self.servers[first] = conduit
        big = self.local / "big.bin"
        for name in names[1:]:
            bg.REPO = self.builds[name].parent
            server = self.start_conduit(f"conduit-{name}")
            os.link(big, server.disk / "big.bin")
            self.servers[name] = server

    def measure(self, row: bg.Row, name: str) -> dict[str, float]:
        server = self.servers[name]
        pid = server.proc.pid if server.proc else 0
        sshd = name == "OpenSSH"
        before = proc_times(pid)
        loop_before = proc_times(pid, pid)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        server.name = "OpenSSH" if sshd else "Conduit"  # Bench.user() reads it
        spy = None
        if self.args.spy and not sshd:
            raw = self.args.spy_raw
            out = f"{self.args.spy}-{name}-{row.label.replace(' ', '-')}.{'txt' if raw else 'svg'}"
            argv = ["py-spy", "record", "--native", "-r", "200", "-o", out, "--pid", str(pid)]
            argv += ["-f", "raw"] if raw else []
            spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
            time.sleep(1.5)  # attached before the transfer starts
            before, loop_before = proc_times(pid), proc_times(pid, pid)
        if self.args.perf:
            out = f"{self.args.perf}-{name}-{row.label.replace(' ', '-')}.data"
            argv = ["perf", "record", "-q", "-F", "499", "-g", "-o", out, "-p", str(pid)]
            spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)
            before, loop_before = proc_times(pid), proc_times(pid, pid)
        wall = self.transfer(row, server)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        server.name = name
        kids_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if sshd:  # wait until the connection's processes are reaped
            last = proc_times(pid)
            for _ in range(20):
                time.sleep(0.1)
                now = proc_times(pid)
                if now == last:
                    break
                last = now
        after = proc_times(pid)
        loop_after = proc_times(pid, pid)
        gib = self.args.size / bg.GIB
        if sshd:
            user, system = after[2] - before[2], after[3] - before[3]
            loop = 0.0
        else:
            user, system = after[0] - before[0], after[1] - before[1]
            loop = (loop_after[0] + loop_after[1]) - (loop_before[0] + loop_before[1])
        # The client is our child: its CPU (scp/sftp and the ssh it runs) minus
        # what transfer() itself ran (sync, none else).
        client = (kids_after.ru_utime - kids.ru_utime) + (kids_after.ru_stime - kids.ru_stime)
        return {
            "wall": wall / gib,
            "user": user / gib,
            "sys": system / gib,
            "cpu": (user + system) / gib,
            "loop": loop / gib,
            "workers": (user + system - loop) / gib if not sshd else 0.0,
            "client": client / gib,
        }

    def go(self) -> None:
        rows = [
            bg.Row("big", d, c)
            for d in ("down", "up")
            for c in bg.CLIENTS
            if bg.Row("big", d, c).selected(self.args.only)
        ]
        names = ["OpenSSH", *self.builds]
        keys = ("wall", "cpu", "user", "sys", "loop", "workers", "client")
        table: dict[tuple[str, str], list[dict[str, float]]] = {}
        for run in range(self.args.runs):
            order = names if run % 2 == 0 else [names[0], *reversed(names[1:])]
            for row in rows:
                for name in order:
                    m = self.measure(row, name)
                    table.setdefault((row.label, name), []).append(m)
                    print(
                        f"  run {run} {row.label:14} {name:8} "
                        + " ".join(f"{k} {m[k]:.2f}" for k in keys)
                        + f"  load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        print("\nmedians, seconds per GiB (MB/s from wall):")
        for row in rows:
            for name in names:
                ms = table[(row.label, name)]
                med = {k: statistics.median(m[k] for m in ms) for k in keys}
                rate = bg.GIB / 1e6 / med["wall"]
                print(
                    f"| {row.label} | {name} | {rate:.0f} | "
                    + " | ".join(f"{med[k]:.2f}" for k in keys)
                    + " |"
                )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=bg.parse_size, default=bg.GIB)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", action="append", default=[])
    p.add_argument("--build", action="append", default=[], metavar="NAME=SRC")
    p.add_argument("--tmp")
    p.add_argument("--spy", metavar="PREFIX", help="py-spy --native flame graph per row")
    p.add_argument("--perf", metavar="PREFIX", help="perf record (CPU samples) per transfer")
    p.add_argument("--spy-raw", action="store_true", help="collapsed stacks, not SVG")
    args = p.parse_args()
    # What bg.Bench reads besides these.
    args.files, args.no_fsync, args.audit_cost, args.profile = 1, False, False, None
    args.respawn, args.pin, args.each, args.keep, args.sftp_server = (
        False,
        False,
        False,
        False,
        "internal",
    )
    specs = args.build or [f"this={bg.REPO / 'src'}"]
    builds = {s.split("=", 1)[0]: Path(s.split("=", 1)[1]).resolve() for s in specs}
    bench = Stream(args, builds)
    try:
        bench.setup()
        bench.go()
    finally:
        bench.stop()
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
