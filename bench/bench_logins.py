"""Logins per second: Conduit against OpenSSH sshd, same client, same machine.

Three ways in, each against both servers: a plain public key, a user
certificate from a trusted CA, and that certificate with a revocation list
of 100,000 revoked serials (an OpenSSH KRL made by ``ssh-keygen -k``). Each
login is one OpenSSH ``sftp -b /dev/null`` run (connect, key exchange,
authenticate, open the SFTP subsystem, quit), ``--parallel`` clients at a
time; the table gives logins/s and the ratio Conduit/OpenSSH per row.

Each server runs as it would: sshd forks per connection; Conduit is one
``python -m conduit serve`` process with its durable journal. Both use
ed25519 host and client keys and aes128-gcm. A failed login stops the run:
a server that refuses cannot look fast.

Usage::

    python bench/bench_logins.py                 # 60 logins per row, 4 at a time
    python bench/bench_logins.py --logins 20 --parallel 2
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_gateway import free_port, wait_port  # noqa: E402

USER = "bench"
CIPHER = "aes128-gcm@openssh.com"
CERT_SERIAL = 4242


@dataclass
class Server:
    name: str
    port: int
    user: str
    proc: subprocess.Popen[bytes]


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.known = tmp / "known_hosts"
        self.known.touch()
        self.key = tmp / "id_ed25519"
        self.ca = tmp / "user_ca"
        self.krl = tmp / "revoked.krl"
        self.sshd_user = subprocess.run(
            ["id", "-un"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self.servers: list[Server] = []

    def setup(self) -> None:
        keygen("-t", "ed25519", "-N", "", "-f", str(self.key))
        keygen("-t", "ed25519", "-N", "", "-f", str(self.ca))
        keygen(
            "-s", str(self.ca), "-I", "bench", "-z", str(CERT_SERIAL),
            "-n", f"{USER},{self.sshd_user}", f"{self.key}.pub",
        )  # fmt: skip
        # 100,000 revoked serials, none of them the certificate's: sparse
        # enough that ssh-keygen keeps most as a list, some as bitmaps.
        rng = random.Random(14)
        serials = set(rng.sample(range(1, 10_000_000), 100_000)) - {CERT_SERIAL}
        spec = self.tmp / "krl.spec"
        spec.write_text("".join(f"serial: {n}\n" for n in sorted(serials)))
        keygen("-k", "-f", str(self.krl), "-s", f"{self.ca}.pub", str(spec))
        print(f"KRL: {len(serials)} serials, {self.krl.stat().st_size} bytes", flush=True)

    # -- servers -------------------------------------------------------------------

    def sshd(self, name: str, krl: bool) -> Server:
        folder = self.tmp / name
        folder.mkdir()
        host = folder / "host_ed25519"
        keygen("-t", "ed25519", "-N", "", "-f", str(host))
        auth = folder / "authorized_keys"
        auth.write_text(Path(f"{self.key}.pub").read_text())
        port = free_port()
        config = folder / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile none\n"
            f"AuthorizedKeysFile {auth}\nTrustedUserCAKeys {self.ca}.pub\n"
            + (f"RevokedKeys {self.krl}\n" if krl else "")
            + "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"Ciphers {CIPHER}\nSubsystem sftp internal-sftp\nMaxStartups 100\n"
            "LogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = (folder / "sshd.log").open("wb")
        proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_port(port, proc)
        self._known(port, host.with_suffix(".pub"))
        return Server(name, port, self.sshd_user, proc)

    def conduit(self, name: str, krl: bool) -> Server:
        folder = self.tmp / name
        (folder / "areas" / "bench").mkdir(parents=True)
        pub = Path(f"{self.key}.pub").read_text().strip()
        config = folder / "conduit.toml"
        config.write_text(
            f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{folder}/data"

[gateway.limits]
max_startups = 100
max_startups_per_source = 100
idle_timeout = 0

[zones.local]
level = 3
networks = ["127.0.0.0/8"]

[areas.bench]
zone = "local"
path = "{folder}/areas/bench"

[roles.engineer]
grants = [{{ target = "bench", ops = ["list", "read", "write"] }}]

[users.{USER}]
keys = ["{pub}"]
roles = ["engineer"]

[auth]
trusted_user_ca_keys = ["{self.ca}.pub"]
"""
            + (f'revoked_keys = "{self.krl}"\n' if krl else "")
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
        log_path = folder / "conduit.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "conduit", "serve", "--config", str(config)],
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("conduit exited early:\n" + log_path.read_text())
            m = re.search(r"listening on [^\s]+:(\d+)", log_path.read_text())
            port = int(m.group(1)) if m else None
            time.sleep(0.1)
        if port is None:
            raise SystemExit("conduit did not start")
        wait_port(port, proc)
        self._known(port, folder / "data" / "host_ed25519.pub")
        return Server(name, port, USER, proc)

    def _known(self, port: int, pub: Path) -> None:
        kind, blob = pub.read_text().split()[:2]
        with self.known.open("a") as f:
            f.write(f"[127.0.0.1]:{port} {kind} {blob}\n")

    # -- logins --------------------------------------------------------------------

    def login(self, server: Server, cert: bool) -> None:
        algs = "ssh-ed25519-cert-v01@openssh.com" if cert else "ssh-ed25519"
        argv = [
            "sftp", "-b", "/dev/null", "-P", str(server.port), "-c", CIPHER,
            "-o", f"UserKnownHostsFile={self.known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", f"PubkeyAcceptedAlgorithms={algs}", "-o", "LogLevel=ERROR",
            "-i", str(self.key), f"{server.user}@127.0.0.1",
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise SystemExit(f"{server.name}: login failed: {result.stderr.strip()}")

    def rate(self, server: Server, cert: bool) -> float:
        n, parallel = self.args.logins, self.args.parallel
        self.login(server, cert)  # warm-up (imports, caches)
        start = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda _: self.login(server, cert), range(n)))
        return n / (time.perf_counter() - start)

    def run(self) -> list[tuple[str, float, float]]:
        self.setup()
        plain = (self.sshd("sshd", krl=False), self.conduit("conduit", krl=False))
        revoking = (self.sshd("sshd-krl", krl=True), self.conduit("conduit-krl", krl=True))
        self.servers = [*plain, *revoking]
        rows = []
        for label, (sshd, conduit), cert in (
            ("public key", plain, False),
            ("certificate", plain, True),
            ("certificate + KRL of 100,000 serials", revoking, True),
        ):
            rows.append((label, self.rate(sshd, cert), self.rate(conduit, cert)))
            print(f"{label}: sshd {rows[-1][1]:.1f}/s, Conduit {rows[-1][2]:.1f}/s", flush=True)
        return rows

    def stop(self) -> None:
        for server in self.servers:
            server.proc.terminate()
            try:
                server.proc.wait(10)
            except subprocess.TimeoutExpired:
                server.proc.kill()


def table(rows: list[tuple[str, float, float]], args: argparse.Namespace) -> str:
    lines = [
        f"Logins/s, {args.logins} sftp logins per row, {args.parallel} at a time",
        "",
        "| login | OpenSSH sshd | Conduit | Conduit/OpenSSH |",
        "|---|---:|---:|---:|",
    ]
    for label, sshd, conduit in rows:
        lines.append(f"| {label} | {sshd:.1f} | {conduit:.1f} | {conduit / sshd:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=60, help="logins per row (default 60)")
    parser.add_argument("--parallel", type=int, default=4, help="clients at once (default 4)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="conduit-logins-") as folder:
        bench = Bench(args, Path(folder))
        try:
            rows = bench.run()
        finally:
            bench.stop()
    print()
    print(table(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
