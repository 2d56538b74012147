"""Conduit against OpenSSH sshd, side by side, with the same OpenSSH clients.

Starts an sshd of its own (own config, loopback, ephemeral port) and a Conduit
gateway in a separate process (``python -m conduit serve``), then moves the
same big file and the same tree of small files up and down with ``scp``,
``scp -O`` and ``sftp`` against each, several runs per row, and prints a table
of MB/s (big file, MB = 10^6 bytes) and files/s (tree) with the ratio
Conduit/OpenSSH per row. The table also goes to ``bench/results/latest.md``.

Both servers use aes128-gcm@openssh.com (another cipher with
``CONDUIT_BENCH_CIPHER=chacha20-poly1305@openssh.com``, the one stock OpenSSH
clients negotiate; every benchmark that imports this module follows it), no
compression, the same client key and a pinned known_hosts. All files live in
one temporary folder on the same disk; the download sources are hard links to
one file, so both servers read the same cached pages. After every transfer one
result is SHA-256 checked against the source, so a broken server cannot look
fast.

Received trees are set aside, not deleted, until the end (:func:`set_aside`):
on an ext4 without a journal (this project's VM) every file created searches
past the inodes deleted in its block group over the last one to five minutes,
so each run's deletes made the next run's creates cost up to ~0.6 ms of kernel
CPU per file, on both servers alike. Before the rows it waits (up to 5 minutes)
until creating a file is cheap again (:func:`settle_creates`: after an earlier
benchmark's clean-up, say), and the header prints what creating a file cost
before and after the rows (:func:`create_cost`).

Usage::

    python bench/bench_gateway.py                 # 1 GiB, 2000 files, 3 runs
    python bench/bench_gateway.py --quick         # 256 MiB, 500 files, 1 run
    python bench/bench_gateway.py --only big --only scp-O
    python bench/bench_gateway.py --profile /tmp/prof.txt --only big-down
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "latest.md"
#: The one cipher of every server and client in the benchmarks built on this module.
CIPHER = os.environ.get("CONDUIT_BENCH_CIPHER", "aes128-gcm@openssh.com")
USER = "bench"
GIB = 1024**3
MIB = 1024**2
CLIENTS = ("scp", "scp-O", "sftp")


def cost(proc: subprocess.Popen[bytes] | None) -> tuple[float, int, float]:
    """CPU seconds (user + system) and minor page faults of ``proc`` so far, and
    the CPU seconds of its main thread alone (the event loop: the one that
    must not be the bottleneck), from /proc."""
    if proc is None:
        return 0.0, 0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    loop = Path(f"/proc/{proc.pid}/task/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / tick
    return cpu, int(fields[7]), (int(loop[11]) + int(loop[12])) / tick


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([KMG]i?B?)?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r}: use e.g. 1GiB, 256MiB, 1048576")
    unit = (m.group(2) or "").upper()[:1]
    return int(m.group(1)) * {"": 1, "K": 1024, "M": MIB, "G": GIB}[unit]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def create_cost(folder: Path, files: int = 200) -> float:
    """Kernel + process CPU µs to create, write (4 KiB) and close one file in a new
    sub-folder of ``folder`` (kept: deleting them would slow the next creates)."""
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=folder))
    data = os.urandom(4096)
    started = time.process_time()
    for i in range(files):
        (probe / f"p{i}").write_bytes(data)
    return (time.process_time() - started) / files * 1e6


def settle_creates(folder: Path, cheap: float = 100.0, patience: float = 300.0) -> float:
    """Wait (up to ``patience`` s) until creating a file in ``folder`` costs less than
    ``cheap`` µs of CPU: an earlier run's deletes stop weighing after one to five
    minutes. Returns the last cost measured (printed in the header either way)."""
    give_up = time.monotonic() + patience
    cost = create_cost(folder)
    while cost >= cheap and time.monotonic() < give_up:
        print(f"creating a file costs {cost:.0f} µs: waiting for old deletes to age", flush=True)
        time.sleep(15)
        cost = create_cost(folder)
    return cost


def default_parent() -> str | None:
    """Where the data goes unless ``--tmp`` says: ``/var/tmp``, not the system temp
    folder that test suites fill and empty (their deletes slow every create in that
    block group for minutes: see :func:`create_cost`)."""
    return "/var/tmp" if os.access("/var/tmp", os.W_OK) else None


def set_aside(result: Path, spent: Path) -> None:
    """Take a transfer's result out of the way: a folder is moved under ``spent``
    (deleted with all the data at the end), a file deleted at once (one inode)."""
    if result.is_dir():
        spent.mkdir(exist_ok=True)
        result.rename(Path(tempfile.mkdtemp(dir=spent)) / result.name)
    else:
        result.unlink(missing_ok=True)


@dataclass
class Server:
    name: str
    port: int
    root: str  # the remote path of the served folder, as clients write it
    disk: Path  # the same folder on disk
    proc: subprocess.Popen[bytes] | None = None


@dataclass(frozen=True)
class Row:
    what: str  # "big" or "tree"
    direction: str  # "up" or "down"
    client: str  # "scp", "scp-O" or "sftp"

    @property
    def label(self) -> str:
        return f"{self.what}-{self.direction} {self.client}"

    def selected(self, only: list[str]) -> bool:
        words = {self.what, self.direction, self.client, f"{self.what}-{self.direction}"}
        return not only or all(any(o == w for w in words) for o in only)


@dataclass
class Result:
    row: Row
    times: dict[str, list[float]]  # seconds per transfer, by server name
    cpu: dict[str, list[float]]  # server CPU seconds per transfer (Conduit processes only)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="conduit-bench-", dir=args.tmp or default_parent()))
        self.local = self.tmp / "local"
        self.key = self.tmp / "id_ed25519"
        self.known_hosts = self.tmp / "known_hosts"
        self.servers: dict[str, Server] = {}
        self.starters: dict[str, Callable[[], Server]] = {}  # Conduit servers, for --respawn
        self.tree_hashes: dict[str, str] = {}
        self.big_hash = ""
        self.creation: list[float] = []  # create_cost() before and after the rows
        # server CPU seconds, page faults and its event loop's CPU seconds, last transfer
        self.last_cost = (0.0, 0, 0.0)
        # Extra TOML lines for Conduit's [gateway] and [gateway.limits] (bench_concurrent's
        # --workers, bench_idle's raised limits).
        self.gateway_toml = ""
        self.limits_toml = ""

    # -- set-up -------------------------------------------------------------------------

    def setup(self) -> None:
        self.local.mkdir()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        print(
            f"data in {self.tmp}: writing {self.args.size / MIB:.0f} MiB file and "
            f"{self.args.files} x 4 KiB files",
            flush=True,
        )
        big = self.local / "big.bin"
        h = hashlib.sha256()
        with big.open("wb") as f:
            left = self.args.size
            while left:
                chunk = os.urandom(min(left, 8 * MIB))
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        self.big_hash = h.hexdigest()
        tree = self.local / "tree"
        tree.mkdir()
        for i in range(self.args.files):
            # 20 sub-folders of files, like a real log or config tree.
            sub = tree / f"d{i % 20:02d}"
            sub.mkdir(exist_ok=True)
            data = os.urandom(4096)
            (sub / f"f{i:05d}.dat").write_bytes(data)
            self.tree_hashes[f"d{i % 20:02d}/f{i:05d}.dat"] = hashlib.sha256(data).hexdigest()
        if self.args.audit_cost:
            # Same gateway twice: events dropped vs a durable journal plus a TCP SIEM.
            self.siem = Discard()
            self.starters["OpenSSH"] = lambda: self.start_conduit("conduit-noaudit", audit=False)
            self.starters["Conduit"] = lambda: self.start_conduit(
                "conduit", siem_port=self.siem.port
            )
            self.servers["OpenSSH"] = self.starters["OpenSSH"]()
            self.servers["Conduit"] = self.starters["Conduit"]()
        else:
            self.servers["OpenSSH"] = self.start_sshd()
            self.starters["Conduit"] = self.start_conduit
            self.servers["Conduit"] = self.start_conduit()
        for server in self.servers.values():
            # Download sources: hard links (same pages), and a copy of the tree.
            os.link(big, server.disk / "big.bin")
            shutil.copytree(tree, server.disk / "tree")
        os.sync()
        self.creation.append(settle_creates(self.tmp))

    def start_sshd(self) -> Server:
        folder = self.tmp / "sshd"
        served = folder / "files"
        served.mkdir(parents=True)
        host_key = folder / "host_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
        )
        auth = folder / "authorized_keys"
        auth.write_text(self.key.with_suffix(".pub").read_text())
        port = free_port()
        subsystem = {"internal": "internal-sftp", "external": "/usr/lib/openssh/sftp-server"}[
            self.args.sftp_server
        ]
        config = folder / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\n"
            f"AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\nStrictModes no\n"
            f"UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"Ciphers {CIPHER}\nCompression no\nSubsystem sftp {subsystem}\n"
            f"MaxStartups 50\nLogLevel ERROR\n"
            # bash sources ~/.bashrc when sshd runs it (``bash -c "scp -t ..."``, the
            # legacy scp -O protocol; sftp and SFTP-based scp use internal-sftp, no
            # shell) unless it is a nested shell; a .bashrc like this machine's (pyenv
            # init) costs ~0.4 s per scp -O connection that has nothing to do with sshd.
            f"SetEnv SHLVL=1\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = (folder / "sshd.log").open("wb")
        proc = subprocess.Popen(
            self.pinned(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], server=True),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_port(port, proc)
        pub = host_key.with_suffix(".pub").read_text().split()
        with self.known_hosts.open("a") as f:
            f.write(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
        user = (
            os.environ.get("USER")
            or subprocess.run(
                ["id", "-un"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        self.sshd_user = user
        print(f"OpenSSH sshd on port {port} (Subsystem sftp {subsystem})", flush=True)
        return Server("OpenSSH", port, str(served), served, proc)

    def start_conduit(
        self, name: str = "conduit", *, audit: bool = True, siem_port: int | None = None
    ) -> Server:
        """Conduit as shipped (durable journal, default); ``siem_port`` adds a TCP
        syslog sink; ``audit=False`` drops every event (to measure what audit costs)."""
        folder = self.tmp / name
        served = folder / "areas" / "bench"
        served.mkdir(parents=True, exist_ok=True)
        pub = self.key.with_suffix(".pub").read_text().strip()
        config = folder / "conduit.toml"
        config.write_text(
            f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{folder}/data"
durable_uploads = {"false" if self.args.no_fsync else "true"}
{self.gateway_toml}
[gateway.limits]
max_startups = 50
idle_timeout = 0
{self.limits_toml}

[zones.local]
level = 3
networks = ["127.0.0.0/8"]

[areas.bench]
zone = "local"
path = "{served}"

[roles.engineer]
grants = [
  {{ target = "bench", ops = ["list", "read", "write", "mkdir", "rename", "delete"] }},
]

[users.{USER}]
keys = ["{pub}"]
roles = ["engineer"]
"""
            + ('\n[audit]\nfsync = "batch"\n' if self.args.no_fsync else "")
            + (
                f"""
[[audit.siem]]
target = "tcp://127.0.0.1:{siem_port}"
format = "rfc5424"
"""
                if siem_port
                else ""
            )
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])]
        )
        serve = ["-m", "conduit", "serve"] if audit else [__file__, "--serve-without-audit"]
        argv = [sys.executable, *serve, "--config", str(config)]
        if self.args.profile and not self.args.profile.endswith((".svg", ".folded")):
            argv = [
                "py-spy",
                "record",
                "--native",
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                self.args.profile,
                "--",
                *argv,
            ]
        out = (folder / "conduit.log").open("wb")
        proc = subprocess.Popen(
            self.pinned(argv, server=True), stdout=out, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("conduit exited early:\n" + (folder / "conduit.log").read_text())
            m = re.search(r"listening on [^\s]+:(\d+)", (folder / "conduit.log").read_text())
            port = int(m.group(1)) if m else None
            time.sleep(0.1)
        if port is None:
            raise SystemExit("conduit did not start")
        wait_port(port, proc)
        host = (folder / "data" / "host_ed25519.pub").read_text().split()
        with self.known_hosts.open("a") as f:
            f.write(f"[127.0.0.1]:{port} {host[0]} {host[1]}\n")
        print(f"Conduit on port {port} (pid {proc.pid})", flush=True)
        return Server("Conduit", port, "/bench", served, proc)

    def respawn(self, name: str) -> None:
        """A fresh Conduit process for the next transfer (sshd forks one per connection).

        State a process carries from one transfer to the next then cannot
        decide a row. (That is how glibc's malloc thresholds were found: one
        process ran 1 GiB SFTP downloads ~30 % slower than another for its whole
        life; see gateway/process.py.)
        """
        if name not in self.starters:
            return
        proc = self.servers[name].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        self.servers[name] = self.starters[name]()
        self.settle(self.servers[name].proc)

    @staticmethod
    def settle(proc: subprocess.Popen[bytes] | None) -> None:
        """Give a fresh server 2.5 s, then wait (at most 10 s) until it used no CPU for 0.3 s.

        A new process finishes its start-up work after it listens: the search
        index catches up on what the last process journalled once the journal
        has been quiet for a second (two polls, as starting is journalled), a
        sink reconnects. That belongs to no transfer.
        """
        time.sleep(2.5)
        deadline, last = time.monotonic() + 10, cost(proc)[0]
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = cost(proc)[0]
            if now == last:
                return
            last = now

    def attach_profiler(self) -> subprocess.Popen[bytes] | None:
        """With ``--profile FILE.svg`` (or ``.folded``): py-spy attached to the running
        Conduit for the transfers only (start-up and its imports would fill half the
        graph), writing a flame graph (or collapsed stacks, one per line)."""
        proc, out = self.servers["Conduit"].proc, self.args.profile or ""
        if not out.endswith((".svg", ".folded")) or proc is None:
            return None
        self.settle(proc)
        form = "flamegraph" if out.endswith(".svg") else "raw"
        argv = ["py-spy", "record", "-r", "250", "-f", form, "-o", out]
        spy = subprocess.Popen([*argv, "--pid", str(proc.pid)])
        time.sleep(1)  # attached before the first transfer
        return spy

    def pinned(self, argv: list[str], *, server: bool) -> list[str]:
        """With --pin: servers on the last CPU, clients on the others (``taskset``).

        Unpinned, on a 2-core machine, where the scheduler happens to place a
        server next to the client decides a big-file row by up to 30 %, and
        stays so for that server process's life: a whole row can flip.
        """
        cpus = sorted(os.sched_getaffinity(0))
        if not self.args.pin or len(cpus) < 2:
            return argv
        mine = cpus[-1:] if server else cpus[:-1]
        return ["taskset", "-c", ",".join(map(str, mine)), *argv]

    def stop(self) -> None:
        for server in self.servers.values():
            if server.proc and server.proc.poll() is None:
                server.proc.send_signal(signal.SIGINT)
                try:
                    server.proc.wait(30)
                except subprocess.TimeoutExpired:
                    server.proc.kill()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- one transfer --------------------------------------------------------------------

    def user(self, server: Server) -> str:
        return USER if server.name == "Conduit" or self.args.audit_cost else self.sshd_user

    def ssh_options(self) -> list[str]:
        return [
            "-c",
            CIPHER,
            "-o",
            "Compression=no",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "LogLevel=ERROR",
            "-i",
            str(self.key),
        ]

    def command(self, row: Row, server: Server, src: str, dst: str) -> tuple[list[str], str]:
        """The client command for ``row``; paths starting with ':' are remote."""
        host = f"{self.user(server)}@127.0.0.1"
        if row.client == "sftp":
            verb, rec = ("get" if row.direction == "down" else "put"), " -r" * (row.what == "tree")
            batch = f'{verb}{rec} "{src.removeprefix(":")}" "{dst.removeprefix(":")}"\n'
            argv = ["sftp", "-q", "-b", "-", "-P", str(server.port), *self.ssh_options(), host]
            return argv, batch
        argv = [
            "scp",
            "-q",
            *(["-O"] if row.client == "scp-O" else []),
            *(["-r"] if row.what == "tree" else []),
            "-P",
            str(server.port),
            *self.ssh_options(),
        ]
        argv += [f"{host}:{p[1:]}" if p.startswith(":") else p for p in (src, dst)]
        return argv, ""

    def transfer(self, row: Row, server: Server) -> float:
        """Run one transfer, check its result, clean up; return seconds."""
        name = "big.bin" if row.what == "big" else "tree"
        if row.direction == "up":
            src, dst = str(self.local / name), f":{server.root}/up-{name}"
            result = server.disk / f"up-{name}"
        else:
            src, dst = f":{server.root}/{name}", str(self.local / f"down-{name}")
            result = self.local / f"down-{name}"
        argv, stdin = self.command(row, server, src, dst)
        before = cost(server.proc)
        started = time.perf_counter()
        proc = subprocess.run(
            self.pinned(argv, server=False), input=stdin.encode(), capture_output=True, timeout=600
        )
        elapsed = time.perf_counter() - started
        try:
            if proc.returncode != 0:
                raise SystemExit(
                    f"{server.name} {row.label}: exit {proc.returncode}\n"
                    f"{proc.stderr.decode(errors='replace')}"
                )
            self.check(row, server, result)
        finally:
            set_aside(result, self.tmp / "spent")
            # Write-back of this run's uploads must not land in the next run.
            os.sync()
            if self.args.audit_cost:
                # All in: the search index catches up once the journal is quiet
                # and the SIEM sink sends the last records; wait for both.
                self.settle(server.proc)
            # Read after the check and the sync: work the server does once the
            # client has gone (sending the last records to the SIEM) counts too.
            after = cost(server.proc)
            self.last_cost = after[0] - before[0], after[1] - before[1], after[2] - before[2]
        return elapsed

    def check(self, row: Row, server: Server, result: Path) -> None:
        where = f"{server.name} {row.label}"
        if row.what == "big":
            if not result.is_file() or sha256_file(result) != self.big_hash:
                raise SystemExit(f"{where}: result differs from the source (SHA-256)")
            return
        files = [p for p in result.rglob("*") if p.is_file()]
        if len(files) != self.args.files:
            raise SystemExit(f"{where}: {len(files)} files arrived, expected {self.args.files}")
        # One file per run, a different one each time.
        rel = sorted(self.tree_hashes)[int(time.time() * 1000) % len(self.tree_hashes)]
        if sha256_file(result / rel) != self.tree_hashes[rel]:
            raise SystemExit(f"{where}: {rel} differs from the source (SHA-256)")

    # -- the whole run -----------------------------------------------------------------

    def run(self) -> list[Result]:
        rows = [
            Row(what, direction, client)
            for what in ("big", "tree")
            for direction in ("down", "up")
            for client in CLIENTS
        ]
        rows = [r for r in rows if r.selected(self.args.only)]
        if not rows:
            raise SystemExit("--only matched no row")
        results: list[Result] = []
        for row in rows:
            times: dict[str, list[float]] = {name: [] for name in self.servers}
            cpu: dict[str, list[float]] = {name: [] for name in self.servers}
            for _ in range(self.args.runs):
                # Alternate the servers so drift (caches, heat) hits both alike.
                for name in self.servers:
                    if self.args.respawn:
                        self.respawn(name)
                    times[name].append(self.transfer(row, self.servers[name]))
                    cpu[name].append(self.last_cost[0])
                    if self.args.each:
                        self.print_each(row, name, times[name][-1])
            results.append(Result(row, times, cpu))
            print(self.line(results[-1]), flush=True)
        return results

    def print_each(self, row: Row, name: str, seconds: float) -> None:
        line = f"  {row.label} {name}: {self.rate(row, seconds):.0f}"
        if name == "Conduit" or self.args.audit_cost:  # sshd's work is in forked children
            cpu, faults, loop = self.last_cost
            line += f", server {cpu:.2f} s CPU ({loop:.2f} s its event loop), {faults} page faults"
        print(line, flush=True)

    def rate(self, row: Row, seconds: float) -> float:
        amount: float = self.args.size / 1e6 if row.what == "big" else self.args.files
        return amount / seconds

    def line(self, result: Result) -> str:
        row, times = result.row, result.times
        o = self.rate(row, statistics.median(times["OpenSSH"]))
        c = self.rate(row, statistics.median(times["Conduit"]))
        unit = "MB/s" if row.what == "big" else "files/s"
        line = f"| {row.label} | {unit} | {o:.0f} | {c:.0f} | {c / o:.2f} |"
        if self.args.audit_cost:
            off, on = (statistics.median(result.cpu[name]) for name in ("OpenSSH", "Conduit"))
            transfers = 1 if row.what == "big" else self.args.files
            # what auditing adds per transfer (two records, SIEM line, index), in µs
            per = (on - off) / transfers * 1e6
            line += f" {off:.2f} | {on:.2f} | {on / off:.2f} | {per:.0f} |"
        return line

    def table(self, results: list[Result]) -> str:
        a = self.args
        head = [
            f"Conduit vs OpenSSH sshd: {a.size / MIB:.0f} MiB file, {a.files} x 4 KiB files, "
            f"median of {a.runs} run(s), {CIPHER}, loopback, "
            f"sshd sftp = {a.sftp_server}, "
            f"{'pinned (servers / clients on separate CPUs), ' if a.pin else ''}"
            f"{'a fresh Conduit process per transfer, ' if a.respawn else ''}"
            f"{'no per-file fsync, ' if a.no_fsync else 'durable (fsync per file), '}"
            f"creating a file {' -> '.join(f'{us:.0f}' for us in self.creation)} µs CPU, "
            f"{time.strftime('%Y-%m-%d %H:%M')}",
            "",
            "| row | unit | OpenSSH | Conduit | Conduit/OpenSSH |"
            if not a.audit_cost
            else "| row | unit | audit off | audit on (journal + TCP SIEM) | on/off "
            "| server CPU s, off | on | on/off | audit CPU µs per transfer (on - off) |",
            "|---|---|---|---|---|" + "---|---|---|---|" * a.audit_cost,
        ]
        return "\n".join(head + [self.line(result) for result in results]) + "\n"


class Discard:
    """A TCP syslog receiver that reads and drops everything: the SIEM of the bench."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        with conn:
            while conn.recv(1 << 16):
                pass


def serve_without_audit(config_path: Path) -> int:
    """The gateway with a recorder that drops every event (bench only)."""
    import asyncio

    sys.path.insert(0, str(REPO / "src"))
    from conduit.cli.serve import banner
    from conduit.gateway import Gateway
    from conduit.gateway.process import tune_malloc
    from conduit.site.build import load_checked

    class Drop:
        available = True

        async def record(self, type: str, outcome: str, **fields: object) -> None:
            return None

    async def run() -> None:
        config = load_checked(config_path)
        gateway = Gateway(config, recorder=Drop())
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await gateway.start()
        print(banner(config, gateway.port, gateway.fingerprint, False), flush=True)
        await stop.wait()
        await gateway.stop()

    tune_malloc()  # as conduit serve does
    asyncio.run(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=parse_size, default=GIB, help="big file size (default 1GiB)")
    p.add_argument("--files", type=int, default=2000, help="files in the tree (default 2000)")
    p.add_argument("--runs", type=int, default=3, help="runs per row, median (default 3)")
    p.add_argument("--quick", action="store_true", help="256 MiB, 500 files, 1 run")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="WORD",
        help="rows matching all of: big, tree, up, down, big-up, scp, scp-O, sftp",
    )
    p.add_argument(
        "--sftp-server",
        choices=("internal", "external"),
        default="internal",
        help="sshd's SFTP subsystem: internal-sftp or /usr/lib/openssh/sftp-server",
    )
    p.add_argument(
        "--profile",
        metavar="FILE",
        help="run Conduit under py-spy record --native (raw collapsed stacks); FILE.svg "
        "or FILE.folded: a flame graph or stacks of the transfers only (attached after start-up)",
    )
    p.add_argument(
        "--audit-cost",
        action="store_true",
        help="compare Conduit with auditing on (durable journal + TCP syslog sink) "
        "against auditing off, instead of against OpenSSH; prints the server CPU each "
        "transfer costs more with auditing on, in µs, index and SIEM included",
    )
    p.add_argument(
        "--no-fsync",
        action="store_true",
        help="Conduit without per-file fsyncs (durable_uploads = false, audit fsync = "
        '"batch"), as OpenSSH does none: measures the gateway itself',
    )
    p.add_argument(
        "--respawn",
        action="store_true",
        help="start each Conduit server afresh before every transfer (medians over processes)",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin servers to the last CPU and clients to the others (steadier rows)",
    )
    p.add_argument(
        "--each",
        action="store_true",
        help="print every transfer's rate, and a Conduit server's CPU time and page faults",
    )
    p.add_argument("--serve-without-audit", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument(
        "--tmp", help="parent folder for the data (default: /var/tmp, away from test suites' churn)"
    )
    p.add_argument("--keep", action="store_true", help="keep the data folder")
    args = p.parse_args(argv)
    if args.serve_without_audit:
        return serve_without_audit(Path(args.config))
    if args.quick:
        args.size, args.files, args.runs = 256 * MIB, 500, 1
    bench = Bench(args)
    spy = None
    try:
        bench.setup()
        spy = bench.attach_profiler()
        results = bench.run()
        bench.creation.append(create_cost(bench.tmp))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its flame graph and exits
            spy.wait(60)
        bench.stop()
    table = bench.table(results)
    print("\n" + table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    name = ("audit-cost" if args.audit_cost else "latest") + ("-no-fsync" if args.no_fsync else "")
    out = RESULTS.with_name(f"{name}.md")
    out.write_text(table)
    print(f"written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
