"""Many clients at once: Conduit with 1 and with N worker processes against sshd.

The question ``[gateway] workers`` answers: does the gateway use a second core
when it has one? Eight OpenSSH clients at once (``--clients``) move

- ``put``:  one ``--size`` file each, up (``scp``, SFTP protocol),
- ``get``:  the same file each, down,
- ``tree``: a ``--files`` x 4 KiB tree each, up with ``scp -O -r``,

against OpenSSH ``sshd``, Conduit with ``workers = 1`` and Conduit with
``workers = --workers``, each server started under ``taskset -c 0`` and then
``taskset -c 0,1`` (its children inherit the mask; the clients are not
pinned). The figure is the aggregate wall time of the eight, median of
``--runs``; runs alternate between the servers so that the machine's load
falls on all of them alike. Printed: the times, each Conduit's ratio against
sshd (sshd time / Conduit time: above 1 is faster than sshd) and each
server's scaling from one core to two (time on 1 core / time on 2).

Usage::

    python bench/bench_workers.py                  # 64 MiB, 150 files, 3 runs
    python bench/bench_workers.py --quick          # 16 MiB, 50 files, 1 run
    python bench/bench_workers.py --only tree --cpus 0,1
    # A/B, interleaved in one run: this tree's workers against an older tree's
    python bench/bench_workers.py --only tree --no-fsync --base /tmp/old --skip w1
    # flame graphs (py-spy) of the supervisor and worker 0 during each row
    python bench/bench_workers.py --only tree --profile bench/results --runs 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_gateway import (
    CIPHER,
    MIB,
    REPO,
    create_cost,
    default_parent,
    free_port,
    parse_size,
    set_aside,
    settle_creates,
    wait_port,
)

USER = "bench"
ROWS = ("put", "get", "tree")


def tree_cpu(root: int) -> tuple[float, float, float]:
    """CPU seconds (user + system, with reaped children's) of ``root`` and all
    its descendants, of ``root`` alone, and the system part of the first."""
    stats: dict[int, tuple[int, float, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = sum(int(f) for f in fields[11:15]) / tick
            system = (int(fields[12]) + int(fields[14])) / tick
            stats[int(entry.name)] = (int(fields[1]), cpu, system)
    family, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _, _) in stats.items() if ppid in family} - family
        family |= more
        grew = bool(more)
    own = stats.get(root, (0, 0.0, 0.0))[1]
    alive = [stats[pid] for pid in family if pid in stats]
    return sum(s[1] for s in alive), own, sum(s[2] for s in alive)


def switches(root: int) -> int:
    """Context switches (voluntary and not) of ``root`` and its live children:
    each message between a supervisor and a worker wakes the reader once."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(entry.name) == root or int(fields.get("PPid", "0").strip() or 0) == root:
            total += int(fields["voluntary_ctxt_switches"])
            total += int(fields["nonvoluntary_ctxt_switches"])
    return total


class Servers:
    """sshd and the Conduit gateways, under one CPU mask at a time."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="conduit-workers-", dir=default_parent()))
        self.key = self.tmp / "id_ed25519"
        self.known = self.tmp / "known_hosts"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.roots: dict[str, tuple[str, Path]] = {}  # remote path, same folder on disk
        self.cpu = (0.0, 0.0, 0.0)
        self.switches = 0
        self.sshd_user = subprocess.run(
            ["id", "-un"], capture_output=True, text=True, check=True
        ).stdout.strip()

    def setup(self) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        local = self.tmp / "local"
        local.mkdir()
        with (local / "big.bin").open("wb") as f:
            left = self.args.size
            while left:
                f.write(os.urandom(min(left, 8 * MIB)))
                left -= min(left, 8 * MIB)
        tree = local / "tree"
        for i in range(self.args.files):
            sub = tree / f"d{i % 10:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"f{i:04d}.dat").write_bytes(os.urandom(4096))

    def start(self, name: str, cpus: str) -> None:
        if name == "sshd":
            self._sshd(cpus)
        else:
            source = self.args.base if name == "base" else REPO
            self._conduit(name, cpus, 1 if name == "w1" else self.args.workers, source)
        served = self.roots[name][1]
        if not (served / "big.bin").exists():
            os.link(self.tmp / "local" / "big.bin", served / "big.bin")

    def _sshd(self, cpus: str) -> None:
        folder = self.tmp / "sshd"
        served = folder / "files"
        served.mkdir(parents=True, exist_ok=True)
        host_key = folder / "host_ed25519"
        if not host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
        auth = folder / "authorized_keys"
        auth.write_text(self.key.with_suffix(".pub").read_text())
        port = free_port()
        config = folder / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\n"
            f"AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\nStrictModes no\n"
            f"UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"Ciphers {CIPHER}\nCompression no\nSubsystem sftp internal-sftp\n"
            f"MaxStartups 50\nLogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        argv = ["taskset", "-c", cpus, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, proc)
        self._pin_host("sshd", port, host_key.with_suffix(".pub"))
        self.procs["sshd"], self.ports["sshd"] = proc, port
        self.roots["sshd"] = (str(served), served)

    def _conduit(self, name: str, cpus: str, workers: int, source: Path) -> None:
        folder = self.tmp / name
        served = folder / "areas" / "bench"
        served.mkdir(parents=True, exist_ok=True)
        pub = self.key.with_suffix(".pub").read_text().strip()
        config = folder / "conduit.toml"
        config.write_text(
            f'[gateway]\nlisten = "127.0.0.1:0"\ndata_dir = "{folder}/data"\n'
            f"workers = {workers}\n\n[gateway.limits]\nmax_startups = 50\nidle_timeout = 0\n"
            f"max_sessions_per_user = 64\n\n"
            f'[zones.local]\nlevel = 3\nnetworks = ["127.0.0.0/8"]\n\n'
            f'[areas.bench]\nzone = "local"\npath = "{served}"\n\n[roles.engineer]\n'
            f'grants = [{{ target = "bench", ops = ["list", "read", "write", "mkdir"] }}]\n\n'
            f'[users.{USER}]\nkeys = ["{pub}"]\nroles = ["engineer"]\n'
            + ('\n[audit]\nfsync = "batch"\n' if self.args.no_fsync else "")
        )
        if self.args.no_fsync:  # like-for-like: the durability sshd offers
            text = config.read_text().replace("workers =", "durable_uploads = false\nworkers =")
            config.write_text(text)
        env = {**os.environ, "PYTHONPATH": str(source / "src")}
        log = folder / "conduit.log"
        argv = ["taskset", "-c", cpus, sys.executable, "-m", "conduit", "serve"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*argv, "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline, port = time.monotonic() + 30, 0
        while not port and time.monotonic() < deadline:
            for line in log.read_text().splitlines():
                if "listening on" in line:
                    port = int(line.rsplit(":", 1)[1])
            time.sleep(0.1)
        if not port:
            raise SystemExit(f"{name} did not start:\n{log.read_text()}")
        wait_port(port, proc)
        time.sleep(1.0)  # the workers import and load their keys
        self._pin_host(name, port, folder / "data" / "host_ed25519.pub")
        self.procs[name], self.ports[name] = proc, port
        self.roots[name] = ("/bench", served)

    def _pin_host(self, name: str, port: int, pub: Path) -> None:
        key = " ".join(pub.read_text().split()[:2])
        with self.known.open("a") as f:
            f.write(f"[127.0.0.1]:{port} {key}\n")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    # -- one measurement: N clients at once ---------------------------------------------

    def client(self, name: str, row: str, i: int) -> list[str]:
        user = self.sshd_user if name == "sshd" else USER
        opts = [
            "-q",
            "-c",
            CIPHER,
            "-P",
            str(self.ports[name]),
            "-o",
            f"UserKnownHostsFile={self.known}",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-i",
            str(self.key),
        ]
        remote, _disk = self.roots[name]
        target = f"{user}@127.0.0.1:{remote}"
        local = self.tmp / "local"
        if row == "put":
            return ["scp", *opts, str(local / "big.bin"), f"{target}/up{i}.bin"]
        if row == "get":
            return ["scp", *opts, f"{target}/big.bin", str(self.tmp / "down" / f"{name}{i}.bin")]
        return ["scp", "-O", "-r", *opts, str(local / "tree"), f"{target}/tree{i}"]

    def _spy(self, name: str, row: str) -> list[subprocess.Popen[bytes]]:
        """py-spy on the supervisor and its first worker (--profile), or nothing."""
        if not self.args.profile or name == "sshd":
            return []
        root = self.procs[name].pid
        pids = {"main": root}
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            worker = ppid == root and b"conduit.gateway.worker" in cmdline
            if worker and cmdline[cmdline.index(b"--index") + 1] == b"0":
                pids["worker0"] = int(entry.name)
        spies = []
        for what, pid in pids.items():
            raw = self.args.profile_raw  # collapsed stacks (text), to read and sum
            out = self.args.profile / f"workers-{row}-{name}-{what}.{'txt' if raw else 'svg'}"
            argv = ["py-spy", "record", "--format", "raw" if raw else "flamegraph", "-o", str(out)]
            argv += ["--pid", str(pid), "--nonblocking", "--rate", "400"]
            spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(1.0)  # py-spy attaches
        return spies

    def measure(self, name: str, row: str) -> float:
        disk = self.roots[name][1]
        for leftover in disk.iterdir():
            if leftover.name != "big.bin":
                set_aside(leftover, self.tmp / "spent")  # deletes would slow the next creates
        (self.tmp / "down").mkdir(exist_ok=True)
        before = tree_cpu(self.procs[name].pid)
        switched = switches(self.procs[name].pid)
        spies = self._spy(name, row)
        start = time.perf_counter()
        procs = [
            subprocess.Popen(self.client(name, row, i), stderr=subprocess.PIPE)
            for i in range(self.args.clients)
        ]
        failed = [p.communicate()[1] for p in procs if p.wait() != 0]
        seconds = time.perf_counter() - start
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        if failed:
            raise SystemExit(f"{name} {row}: {len(failed)} client(s) failed: {failed[0]!r}")
        set_aside(self.tmp / "down", self.tmp / "spent")
        after = tree_cpu(self.procs[name].pid)
        self.cpu = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
        self.switches = switches(self.procs[name].pid) - switched
        return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=64 * MIB)
    parser.add_argument("--files", type=int, default=150)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="workers of the second gateway")
    parser.add_argument("--cpus", action="append", help="CPU masks (default: 0 and 0,1)")
    parser.add_argument("--only", action="append", choices=ROWS)
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help='like-for-like: durable_uploads = false, [audit] fsync = "batch"',
    )
    parser.add_argument("--quick", action="store_true", help="16 MiB, 50 files, 1 run")
    parser.add_argument(
        "--base", type=Path, help="also run --workers workers from this (older) source tree"
    )
    parser.add_argument("--skip", action="append", default=[], help="a server not to run")
    parser.add_argument("--profile", type=Path, help="py-spy flame graphs (SVG) into this folder")
    parser.add_argument("--profile-raw", action="store_true", help="collapsed stacks, not SVG")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.files, args.runs = 16 * MIB, 50, 1
    masks = args.cpus or ["0", "0,1"]
    rows = args.only or list(ROWS)
    # --workers 1 --base: "w1" once (the A/B of the shipped default, one worker)
    names = ["sshd", "w1", f"w{args.workers}", *(["base"] if args.base else [])]
    names = list(dict.fromkeys(names))
    names = [n for n in names if n == "sshd" or n not in args.skip]  # ratios need sshd
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    servers = Servers(args)
    servers.setup()
    creation = [settle_creates(servers.tmp)]  # see bench_gateway: deletes slow creates
    times: dict[tuple[str, str, str], list[float]] = {}
    cpu: dict[tuple[str, str, str], list[float]] = {}
    load = [os.getloadavg()[0]]
    try:
        for mask in masks:
            for name in names:
                servers.start(name, mask)
            for _run in range(args.runs):
                for row in rows:
                    for name in names:
                        seconds = servers.measure(name, row)
                        times.setdefault((mask, row, name), []).append(seconds)
                        cpu.setdefault((mask, row, name), []).append(servers.cpu[0])
                        print(
                            f"cpus {mask:4} {row:5} {name:5} {seconds:7.2f} s  server CPU "
                            f"{servers.cpu[0]:6.2f} s (main process {servers.cpu[1]:5.2f} s, "
                            f"system {servers.cpu[2]:5.2f} s), "
                            f"{servers.switches} context switches (live processes)",
                            flush=True,
                        )
            for name in names:
                servers.stop(name)
            load.append(os.getloadavg()[0])
        creation.append(create_cost(servers.tmp))
    finally:
        for name in list(servers.procs):
            servers.stop(name)
        shutil.rmtree(servers.tmp, ignore_errors=True)
    print(
        f"\n{args.clients} clients at once; put/get {args.size // MIB} MiB each, tree "
        f"{args.files} x 4 KiB each (scp -O -r); median of {args.runs}; "
        f"load average {' -> '.join(f'{x:.1f}' for x in load)}; creating a file "
        f"{' -> '.join(f'{us:.0f}' for us in creation)} µs CPU"
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    head = f"| row | cpus | {' | '.join(n + ' s' for n in names)} | "
    head += " | ".join(f"{n} vs sshd" for n in names[1:]) + " |"
    print(head + "\n|" + "---|" * (head.count("|") - 1))
    for row in rows:
        for mask in masks:
            cells = [f"{med[(mask, row, n)]:.2f}" for n in names]
            ratios = [f"{med[(mask, row, 'sshd')] / med[(mask, row, n)]:.2f}x" for n in names[1:]]
            print(f"| {row} | {mask} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    print("\nserver CPU seconds per run (all its processes; median):")
    for row in rows:
        for mask in masks:
            parts = [f"{n} {statistics.median(cpu[(mask, row, n)]):.2f}" for n in names]
            print(f"  {row:5} cpus {mask:4} " + "  ".join(parts))
    if len(masks) == 2:
        print(f"\nscaling, {masks[0]} -> {masks[1]} (time on the first / time on the second):")
        for row in rows:
            parts = [f"{n} {med[(masks[0], row, n)] / med[(masks[1], row, n)]:.2f}x" for n in names]
            print(f"  {row:5} " + "  ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
