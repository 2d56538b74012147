"""Conduit vs OpenSSH sshd, side by side, with the same OpenSSH client.

Starts an sshd of its own (own config, loopback, ephemeral port) and a Conduit
gateway (its own process, hashing and policy on), then moves the same big
file and the same tree of small files up and down with ``scp``, ``scp -O``
and ``sftp``. Prints MB/s (files/s for the tree) per row and the ratio
Conduit/OpenSSH; writes the table to bench/results/latest.md.

    python bench/bench_gateway.py            # 1 GiB, 2000 x 4 KiB, 3 runs each
    python bench/bench_gateway.py --quick    # 256 MiB, 500 files, 1 run
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
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

CIPHER = "aes128-gcm@openssh.com"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Server:
    name: str
    port: int
    remote_root: str  # where the client writes/reads on this server
    local_root: Path  # the same place on disk
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_sshd(work: Path, pubkey: str) -> Server:
    sshd_dir = work / "sshd"
    sshd_dir.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sshd_dir / "host")], check=True
    )
    (sshd_dir / "authorized_keys").write_text(pubkey)
    data = work / "sshd-data"
    data.mkdir()
    port = free_port()
    sftp_server = next(
        (
            p
            for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")
            if Path(p).exists()
        ),
        "internal-sftp",
    )
    config = sshd_dir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {sshd_dir / 'host'}\n"
        f"PidFile none\nAuthorizedKeysFile {sshd_dir / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"Subsystem sftp {sftp_server}\nCompression no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    process = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL
    )
    wait_port(port)
    return Server("OpenSSH", port, str(data), data, process)


class Discard:
    """A TCP syslog receiver that reads and drops everything (the SIEM in the bench)."""

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


def start_conduit(
    work: Path, pubkey: str, user: str, *, audit: bool = True, siem_port: int | None = None
) -> Server:
    """Conduit as shipped: with ``audit``, a durable journal and a TCP syslog sink;
    without, every event is dropped (to measure what auditing costs)."""
    site = work / ("conduit" if audit else "conduit-noaudit")
    site.mkdir()
    port = free_port()
    journal = (
        f'[audit]\njournal = "data/audit"\nfsync = "always"\n'
        f'[[audit.siem]]\ntarget = "tcp://127.0.0.1:{siem_port}"\nformat = "rfc5424"\n'
        if audit and siem_port
        else ""
    )
    (site / "conduit.toml").write_text(
        journal + f'[gateway]\nlisten = "127.0.0.1:{port}"\ndata_dir = "data"\n'
        "[gateway.limits]\nidle_timeout = 0\n"
        '[zones.bench]\nlevel = 3\nnetworks = ["127.0.0.0/8"]\n'
        '[areas.bench]\nzone = "bench"\npath = "data/areas/bench"\n'
        '[roles.bench]\ngrants = [{ target = "bench", ops = ["list", "read", "write", '
        '"mkdir", "delete", "rename"] }]\n'
        f'[users.{user}]\nkeys = ["{pubkey.strip()}"]\nroles = ["bench"]\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = ["-m", "conduit", "serve"] if audit else [__file__, "--serve-without-audit"]
    process = subprocess.Popen(
        [sys.executable, *command, "--config", str(site / "conduit.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    wait_port(port)
    name = "Conduit" if audit else "Conduit, audit off"
    return Server(name, port, "/bench", site / "data" / "areas" / "bench", process)


def serve_without_audit(config_path: Path) -> int:
    """Run the gateway with a recorder that drops every event (bench only)."""
    import asyncio
    import signal

    sys.path.insert(0, str(ROOT / "src"))
    from conduit.config.check import load_checked
    from conduit.gateway import Gateway

    class Drop:
        available = True

        async def record(self, type: str, outcome: str, **fields: object) -> None:
            return None

    async def run() -> None:
        gateway = Gateway(load_checked(config_path), recorder=Drop())
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await gateway.start()
        await stop.wait()
        await gateway.stop()

    asyncio.run(run())
    return 0


@dataclass
class Row:
    label: str
    unit: str  # "MB/s" or "files/s"
    amount: float  # bytes or files moved per run
    run: Callable[[Server], None]
    check: Callable[[Server], None]
    reset: Callable[[Server], None]


def client_options(key: Path, known_hosts: Path) -> list[str]:
    return [
        "-c",
        CIPHER,
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "Compression=no",
        "-o",
        "LogLevel=ERROR",
    ]


def measure(row: Row, server: Server, runs: int) -> float:
    times = []
    for _ in range(runs):
        row.reset(server)
        started = time.perf_counter()
        row.run(server)
        times.append(time.perf_counter() - started)
        row.check(server)
    seconds = statistics.median(times)
    return row.amount / seconds / (1e6 if row.unit == "MB/s" else 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1 << 30, help="big file bytes (default 1 GiB)")
    parser.add_argument("--files", type=int, default=2000, help="small files in the tree")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--quick", action="store_true", help="256 MiB, 500 files, 1 run")
    parser.add_argument("--only", default="", help="comma-separated substrings of row labels")
    parser.add_argument(
        "--audit-cost",
        action="store_true",
        help="compare Conduit with auditing on (durable journal + TCP syslog) "
        "against auditing off, instead of against OpenSSH",
    )
    parser.add_argument("--serve-without-audit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_without_audit:
        return serve_without_audit(args.config)
    if args.quick:
        args.size, args.files, args.runs = 256 << 20, 500, 1
    user = os.environ.get("USER") or "root"
    work = Path(tempfile.mkdtemp(prefix="conduit-bench-"))
    try:
        return run_all(args, user, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(args: argparse.Namespace, user: str, work: Path) -> int:
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pubkey = key.with_suffix(".pub").read_text()
    local = work / "local"
    local.mkdir()
    big = local / "big.bin"
    with big.open("wb") as f:
        for _ in range(args.size // (1 << 20)):
            f.write(os.urandom(1 << 20))
    big_sha = sha256(big)
    tree = local / "tree"
    tree.mkdir()
    for i in range(args.files):
        (tree / f"f{i:05d}.dat").write_bytes(os.urandom(4096))
    opts = client_options(key, work / "known_hosts")
    siem = Discard()
    baseline = (
        start_conduit(work, pubkey, user, audit=False)
        if args.audit_cost
        else start_sshd(work, pubkey)
    )
    servers = [baseline, start_conduit(work, pubkey, user, siem_port=siem.port)]
    down = work / "down"

    def remote(server: Server, name: str) -> str:
        return f"{user}@127.0.0.1:{server.remote_root}/{name}"

    def scp(legacy: bool, *paths: str, recursive: bool = False) -> Callable[[Server], None]:
        def go(server: Server) -> None:
            argv = [
                "scp",
                "-q",
                *(["-O"] if legacy else []),
                *(["-r"] if recursive else []),
                "-P",
                str(server.port),
                *opts,
            ]
            argv += [remote(server, p[1:]) if p.startswith(":") else p for p in paths]
            subprocess.run(argv, check=True, timeout=3600)

        return go

    def sftp(command: str) -> Callable[[Server], None]:
        def go(server: Server) -> None:
            batch = command.format(root=server.remote_root, down=down, local=local)
            subprocess.run(
                ["sftp", "-q", "-b", "-", "-P", str(server.port), *opts, f"{user}@127.0.0.1"],
                input=batch.encode(),
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=3600,
            )

        return go

    def reset_up(server: Server) -> None:
        for child in server.local_root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    def reset_down(server: Server) -> None:
        shutil.rmtree(down, ignore_errors=True)
        down.mkdir()

    def seed(server: Server) -> None:
        reset_up(server)
        shutil.copy(big, server.local_root / "big.bin")
        shutil.copytree(tree, server.local_root / "tree")

    def check_up_big(server: Server) -> None:
        assert sha256(server.local_root / "big.bin") == big_sha, "corrupt upload"

    def check_down_big(server: Server) -> None:
        assert sha256(down / "big.bin") == big_sha, "corrupt download"

    def check_up_tree(server: Server) -> None:
        assert len(list((server.local_root / "tree").iterdir())) == args.files

    def check_down_tree(server: Server) -> None:
        assert len(list((down / "tree").iterdir())) == args.files

    def nothing(server: Server) -> None:
        pass

    size, files = float(args.size), float(args.files)
    rows = [
        Row(
            "1 file up, scp", "MB/s", size, scp(False, str(big), ":big.bin"), check_up_big, reset_up
        ),
        Row(
            "1 file up, scp -O",
            "MB/s",
            size,
            scp(True, str(big), ":big.bin"),
            check_up_big,
            reset_up,
        ),
        Row(
            "1 file up, sftp",
            "MB/s",
            size,
            sftp("put {local}/big.bin {root}/big.bin\n"),
            check_up_big,
            reset_up,
        ),
        Row(
            "1 file down, scp",
            "MB/s",
            size,
            scp(False, ":big.bin", str(down)),
            check_down_big,
            reset_down,
        ),
        Row(
            "1 file down, scp -O",
            "MB/s",
            size,
            scp(True, ":big.bin", str(down)),
            check_down_big,
            reset_down,
        ),
        Row(
            "1 file down, sftp",
            "MB/s",
            size,
            sftp("get {root}/big.bin {down}/big.bin\n"),
            check_down_big,
            reset_down,
        ),
        Row(
            "tree up, scp -r",
            "files/s",
            files,
            scp(False, str(tree), ":", recursive=True),
            check_up_tree,
            reset_up,
        ),
        Row(
            "tree up, scp -O -r",
            "files/s",
            files,
            scp(True, str(tree), ":", recursive=True),
            check_up_tree,
            reset_up,
        ),
        Row(
            "tree up, sftp put -r",
            "files/s",
            files,
            sftp("mkdir {root}/tree\nput -r {local}/tree {root}/\n"),
            check_up_tree,
            reset_up,
        ),
        Row(
            "tree down, scp -r",
            "files/s",
            files,
            scp(False, ":tree", str(down), recursive=True),
            check_down_tree,
            reset_down,
        ),
        Row(
            "tree down, scp -O -r",
            "files/s",
            files,
            scp(True, ":tree", str(down), recursive=True),
            check_down_tree,
            reset_down,
        ),
        Row(
            "tree down, sftp get -r",
            "files/s",
            files,
            sftp("get -r {root}/tree {down}/\n"),
            check_down_tree,
            reset_down,
        ),
    ]
    wanted = [w for w in args.only.split(",") if w]
    rows = [r for r in rows if not wanted or any(w in r.label for w in wanted)]
    results: list[tuple[Row, float, float]] = []
    try:
        for row in rows:
            figures = []
            for server in servers:
                if "down" in row.label:
                    seed(server)
                figures.append(measure(row, server, args.runs))
            results.append((row, figures[0], figures[1]))
            print(
                f"{row.label:24} {servers[0].name} {figures[0]:9.1f}  Conduit {figures[1]:9.1f} "
                f"{row.unit:8} ratio {figures[1] / figures[0]:.2f}",
                flush=True,
            )
    finally:
        for server in servers:
            server.stop()
    table = render(results, args, servers[0].name)
    print("\n" + table)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / ("audit-cost.md" if args.audit_cost else "latest.md")).write_text(table + "\n")
    return 0


def render(results: list[tuple[Row, float, float]], args: argparse.Namespace, baseline: str) -> str:
    lines = [
        f"big file {args.size >> 20} MiB, tree {args.files} x 4 KiB, {args.runs} run(s), "
        f"median; {CIPHER}; loopback; {os.cpu_count()} cores",
        "",
        f"| row | unit | {baseline} | Conduit | Conduit/{baseline} |",
        "|---|---|---:|---:|---:|",
    ]
    for row, openssh, conduit in results:
        lines.append(
            f"| {row.label} | {row.unit} | {openssh:.1f} | {conduit:.1f} | "
            f"{conduit / openssh:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
