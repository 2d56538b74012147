"""Many OpenSSH clients at once against Conduit and against OpenSSH sshd, side by side.

A gateway in front of a fleet serves dozens of transfers at once, and ``sshd``
gives every connection its own process: one client at a time
(``bench_gateway.py``) does not show whether the gateway keeps up. This bench
starts ``--clients`` (8) OpenSSH clients at the same moment against each
server, each moving its own 64 MiB file (``scp``, ``sftp``, up and down) or its
own 150-file tree (``scp -O -r``, up and down), and times the whole wave: from
the first start to the last exit (aggregate wall time). Rates are the
aggregate (all clients' bytes or files over that time), the median of
``--runs`` waves, and the ratio Conduit/OpenSSH per row. Every upload and
download is checked (SHA-256 of each big file, file count and one file's
SHA-256 of each tree), so a broken server cannot look fast.

The scaling table runs the same waves with each server limited to one core
and to two cores (``sched_setaffinity`` on every process and thread of the
server, as ``taskset -a -p`` does; a forked child inherits it), interleaved,
and prints each server's speed-up from the second core. sshd forks a process
per connection, so it should gain most of a core; a gateway that is one
process cannot gain more than what its clients and the kernel's share of the
work win.

The servers, keys and the served folders come from ``bench_gateway.py`` (same
cipher, same config, as shipped unless ``--no-fsync``). Server CPU seconds
per wave are read from /proc for both (the server's processes, alive or
reaped: sshd's exited children count through its ``cutime``).

Usage::

    python bench/bench_concurrent.py                  # 8 clients, 64 MiB / 150 files, 3 runs
    python bench/bench_concurrent.py --quick          # 1 run
    python bench/bench_concurrent.py --only big-up --only scp --runs 5
    python bench/bench_concurrent.py --profile bench/results   # flame graphs of Conduit
    python bench/bench_concurrent.py --workers 2      # [gateway] workers = 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_gateway import CIPHER, MIB, Bench, Row, Server, parse_size, set_aside  # noqa: E402

RESULTS = ROOT / "bench" / "results"
#: The rows: big files with scp and sftp, trees with scp -O (the legacy protocol
#: many devices still speak, and the one that costs a gateway most per file).
ROWS = [
    Row(what, direction, client)
    for what, clients in (("big", ("scp", "sftp")), ("tree", ("scp-O",)))
    for direction in ("up", "down")
    for client in clients
]


def family(pid: int) -> list[int]:
    """``pid`` and all its living descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid``'s family: its processes' own and their reaped children's."""
    total = 0
    for p in family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def set_cpus(pid: int, cpus: set[int]) -> None:
    """Limit every thread of ``pid``'s family to ``cpus`` (children inherit it)."""
    for p in family(pid):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{p}/task")]
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):  # the thread has just exited
                os.sched_setaffinity(tid, cpus)


@dataclass
class Result:
    row: Row
    times: dict[str, list[float]] = field(default_factory=dict)  # by "server/cpus"
    cpu: dict[str, list[float]] = field(default_factory=dict)


class Concurrent(Bench):
    """bench_gateway's servers, loaded by many clients at once."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        if args.workers is not None:
            self.gateway_toml = f"workers = {args.workers}\n"
        self.limits_toml = f"max_startups_per_source = {max(10, 2 * args.clients)}\n"
        cpus = sorted(os.sched_getaffinity(0))
        # Which CPU sets each wave runs on: all CPUs (the main table), and for the
        # scaling table one core and two cores (the same as "all" on a 2-core box).
        self.cpusets: dict[str, set[int]] = {"all": set(cpus)}
        if args.scaling and len(cpus) >= 2:
            self.cpusets["1 core"] = {cpus[-1]}
            self.cpusets["2 cores"] = set(cpus[-2:])
            if len(cpus) == 2:
                del self.cpusets["2 cores"]
        self.profiler: subprocess.Popen[bytes] | None = None

    def ssh_options(self) -> list[str]:
        """bench_gateway's client options, and one key exchange for both servers.

        OpenSSH 9.x clients prefer sntrup761x25519-sha512, which sshd accepts and
        Conduit's asyncssh (without liboqs) does not offer: it costs ~0.17 s and
        ~0.03 s of server CPU per connection here, which would decide a wave of
        short transfers. ``--default-kex`` measures them as negotiated.
        """
        kex = [] if self.args.default_kex else ["-o", "KexAlgorithms=curve25519-sha256"]
        return [*super().ssh_options(), *kex]

    def cores(self, label: str) -> str:
        """The key under which waves on ``label`` are stored ("2 cores" may be "all")."""
        if label == "2 cores" and "2 cores" not in self.cpusets:
            return "all"
        return label

    # -- one wave -------------------------------------------------------------------------

    def wave(self, row: Row, server: Server) -> float:
        """All clients at once; every result checked and removed; return wall seconds."""
        name = "big.bin" if row.what == "big" else "tree"
        jobs, results = [], []
        for i in range(self.args.clients):
            if row.direction == "up":
                src, dst = str(self.local / name), f":{server.root}/up{i}-{name}"
                results.append(server.disk / f"up{i}-{name}")
            else:
                src, dst = f":{server.root}/{name}", str(self.local / f"down{i}-{name}")
                results.append(self.local / f"down{i}-{name}")
            jobs.append(self.command(row, server, src, dst))
        logs = [(self.tmp / f"client{i}.err").open("w+b") for i in range(len(jobs))]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
            for (argv, _), log in zip(jobs, logs, strict=True)
        ]
        for proc, (_, stdin) in zip(procs, jobs, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        for proc in procs:
            proc.wait(600)
        elapsed = time.perf_counter() - started
        try:
            for proc, log in zip(procs, logs, strict=True):
                if proc.returncode != 0:
                    log.seek(0)
                    raise SystemExit(
                        f"{server.name} {row.label}: exit {proc.returncode}\n"
                        f"{log.read().decode(errors='replace')}"
                    )
            for result in results:
                self.check(row, server, result)
        finally:
            for log in logs:
                log.close()
            for result in results:
                set_aside(result, self.tmp / "spent")  # deletes would slow the next creates
            os.sync()  # this wave's write-back must not land in the next one
        return elapsed

    # -- profiling ------------------------------------------------------------------------

    def profile_start(self, row: Row) -> None:
        if not self.args.profile or self.servers["Conduit"].proc is None:
            return
        out = Path(self.args.profile) / (
            f"flame-concurrent-{row.what}-{row.direction}-{row.client}"
            f"{'-no-fsync' if self.args.no_fsync else ''}"
            f"{'.svg' if self.args.format == 'flamegraph' else '.txt'}"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = ["py-spy", "record", "--subprocesses", "-r", str(self.args.rate)]
        argv += ["-f", self.args.format, "-o", str(out)]
        argv += ["--pid", str(self.servers["Conduit"].proc.pid)]
        self.profiler = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        time.sleep(1)  # py-spy attaches before the first wave

    def profile_stop(self) -> None:
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)
            self.profiler.wait(60)
            self.profiler = None

    # -- the whole run ----------------------------------------------------------------------

    def run_all(self) -> list[Result]:
        rows = [r for r in ROWS if r.selected(self.args.only)]
        if not rows:
            raise SystemExit("--only matched no row")
        results = []
        for row in rows:
            result = Result(row)
            self.profile_start(row)
            try:
                for _ in range(self.args.runs):
                    # Alternate servers and CPU sets so drift hits all alike.
                    for label, cpus in self.cpusets.items():
                        for name, server in self.servers.items():
                            assert server.proc is not None
                            set_cpus(server.proc.pid, cpus)
                            before = cpu_seconds(server.proc.pid)
                            seconds = self.wave(row, server)
                            key = f"{name}/{label}"
                            result.times.setdefault(key, []).append(seconds)
                            result.cpu.setdefault(key, []).append(
                                cpu_seconds(server.proc.pid) - before
                            )
                            if self.args.each:
                                print(
                                    f"  {row.label} {key}: {self.rate(row, seconds):.0f} "
                                    f"({result.cpu[key][-1]:.1f} s server CPU)",
                                    flush=True,
                                )
            finally:
                self.profile_stop()
                for server in self.servers.values():
                    if server.proc is not None:
                        set_cpus(server.proc.pid, self.cpusets["all"])
            results.append(result)
            print(self.line_all(result), flush=True)
        return results

    def rate(self, row: Row, seconds: float) -> float:
        per_client = self.args.size / 1e6 if row.what == "big" else self.args.files
        return float(self.args.clients * per_client / seconds)

    def median_rate(self, result: Result, key: str) -> float:
        return self.rate(result.row, statistics.median(result.times[key]))

    def line_all(self, result: Result) -> str:
        row = result.row
        o, c = (self.median_rate(result, f"{n}/all") for n in ("OpenSSH", "Conduit"))
        oc, cc = (statistics.median(result.cpu[f"{n}/all"]) for n in ("OpenSSH", "Conduit"))
        unit = "MB/s" if row.what == "big" else "files/s"
        return f"| {row.label} | {unit} | {o:.0f} | {c:.0f} | {c / o:.2f} | {oc:.1f} | {cc:.1f} |"

    def line_scaling(self, result: Result) -> str:
        cells = [result.row.label]
        for name in ("OpenSSH", "Conduit"):
            one = self.median_rate(result, f"{name}/1 core")
            two = self.median_rate(result, f"{name}/{self.cores('2 cores')}")
            cells += [f"{one:.0f}", f"{two:.0f}", f"{two / one:.2f}"]
        return "| " + " | ".join(cells) + " |"

    def report(self, results: list[Result]) -> str:
        a = self.args
        load = os.getloadavg()
        head = (
            f"{a.clients} OpenSSH clients at once, Conduit vs OpenSSH sshd: "
            f"{a.size / MIB:.0f} MiB file or {a.files} x 4 KiB files per client, aggregate "
            f"wall time, median of {a.runs} run(s), {CIPHER}, loopback, "
            f"{'no per-file fsync' if a.no_fsync else 'as shipped (durable)'}"
            f"{f', workers = {a.workers}' if a.workers is not None else ''}"
            f"{', under py-spy' if a.profile else ''}"
            f"{'' if a.default_kex else ', curve25519-sha256 for both'}, "
            f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end, "
            f"{time.strftime('%Y-%m-%d %H:%M')}"
        )
        lines = [
            head,
            "",
            "| row | unit | OpenSSH | Conduit | Conduit/OpenSSH | server CPU s, OpenSSH "
            "| Conduit |",
            "|---|---|---|---|---|---|---|",
            *(self.line_all(r) for r in results),
        ]
        if "1 core" in self.cpusets:
            lines += [
                "",
                "Scaling: each server limited to 1 core vs 2 cores (sched_setaffinity on all "
                "its processes and threads), clients unrestricted; aggregate rate",
                "",
                "| row | OpenSSH 1 core | 2 cores | speed-up | Conduit 1 core | 2 cores "
                "| speed-up |",
                "|---|---|---|---|---|---|---|",
                *(self.line_scaling(r) for r in results),
            ]
        return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clients", type=int, default=8, help="clients at once (default 8)")
    p.add_argument("--size", type=parse_size, default=64 * MIB, help="per client (64MiB)")
    p.add_argument("--files", type=int, default=150, help="files per tree (default 150)")
    p.add_argument("--runs", type=int, default=3, help="waves per row, median (default 3)")
    p.add_argument("--quick", action="store_true", help="1 run")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="WORD",
        help="rows matching all of: big, tree, up, down, big-up, scp, scp-O, sftp",
    )
    p.add_argument("--no-scaling", dest="scaling", action="store_false", help="all CPUs only")
    p.add_argument(
        "--no-fsync",
        action="store_true",
        help='Conduit with durable_uploads = false and audit fsync = "batch": the '
        "durability sshd offers",
    )
    p.add_argument("--workers", type=int, help="write [gateway] workers = N into Conduit's config")
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="record Conduit with py-spy (all its processes) per row: "
        "DIR/flame-concurrent-<row>.svg",
    )
    p.add_argument(
        "--format",
        choices=("flamegraph", "raw"),
        default="flamegraph",
        help="py-spy output: flamegraph SVG or raw collapsed stacks (.txt)",
    )
    p.add_argument("--rate", type=int, default=50, help="py-spy samples/s (default 50)")
    p.add_argument(
        "--default-kex",
        action="store_true",
        help="let each server negotiate its preferred key exchange (sshd: sntrup761)",
    )
    p.add_argument("--each", action="store_true", help="print every wave")
    p.add_argument("--tmp", help="parent folder for the data (default: /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the data folder")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 1
    # What bench_gateway's set-up and servers read.
    args.audit_cost = args.respawn = args.pin = False
    args.sftp_server = "internal"
    bench = Concurrent(args)
    saved_profile, args.profile = args.profile, None  # not bench_gateway's whole-life profile
    try:
        bench.setup()
        args.profile = saved_profile
        results = bench.run_all()
    finally:
        bench.stop()
    table = bench.report(results)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"concurrent{'-no-fsync' if args.no_fsync else ''}.md"
    out.write_text(table)
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
