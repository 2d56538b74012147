"""``conduit fleet run`` (push) vs a parallel OpenSSH ``scp`` loop, to the same devices.

Both push the same file to N device folders served by loopback sshds, at the
same concurrency: Conduit through a job file (one process, asyncssh), OpenSSH
through ``xargs -P CONCURRENCY scp`` (a process per device). Printed: wall
times, their ratio (Conduit / scp; the issue's target is <= 1.0) and the
Conduit process's peak RSS (target: under 200 MiB at 200 devices).

Devices share a few sshds (``--sshds``, round robin; each device has its own
folder and its own inventory entry): 200 sshd processes would measure the
machine, not the clients.

    python bench/bench_fleet.py                      # 50 and 200 devices, 10 MiB
    python bench/bench_fleet.py --quick              # 10 devices, 2 MiB
    python bench/bench_fleet.py --devices 50 --verify
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.storage.relay.sshd import Sshd, keygen, start_sshd  # noqa: E402

from bench.bench_gateway import CIPHER  # noqa: E402


def conduit_run(folder: Path, job: Path) -> tuple[float, float, dict[str, object]]:
    """Wall seconds, peak RSS (MiB) and the report of one ``conduit fleet run``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-m", "conduit", "fleet", "run", "--json", str(job)],
        capture_output=True, text=True, env=env, timeout=3600, cwd=folder,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report: dict[str, object] = json.loads(process.stdout)
    return seconds, rss, report


def scp_loop(folder: Path, key: Path, known: Path, source: Path, targets: list[tuple[int, str]],
             concurrency: int) -> float:  # fmt: skip
    lines = "".join(f"{port} {path}\n" for port, path in targets)
    script = (
        f"exec scp -q -c {CIPHER} -i {key} -o IdentitiesOnly=yes -o BatchMode=yes "
        f'-o UserKnownHostsFile={known} -o LogLevel=ERROR -P "$0" {source} "root@127.0.0.1:$1"'
    )
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", str(concurrency), "-L", "1", "sh", "-c", script],
        input=lines, text=True, check=True, timeout=3600, cwd=folder,
    )  # fmt: skip
    return time.perf_counter() - started


def one(base: Path, sshds: list[Sshd], key: Path, known: Path, source: Path, count: int,
        concurrency: int, verify: bool) -> None:  # fmt: skip
    folder = base / f"n{count}"
    folder.mkdir()
    entries = [f'[defaults]\nuser = "root"\nidentity = "{key}"\nprotocol = "sftp"\n']
    targets = []
    for number in range(count):
        sshd = sshds[number % len(sshds)]
        name = f"dev-{number:03d}"
        for side in ("conduit", "scp"):
            (folder / side / name).mkdir(parents=True)
        entries.append(
            f'[devices.{name}]\naddress = "{sshd.address}"\nhost_key = "{sshd.host_key}"\n'
            'groups = ["fleet"]\n'
        )
        targets.append((sshd.port, str(folder / "scp" / name / "fw.bin")))
    (folder / "inventory.toml").write_text("\n".join(entries))
    job = folder / "job.toml"
    job.write_text(
        f'inventory = "inventory.toml"\nkind = "push"\ntargets = ["fleet"]\n'
        f'source = "{source}"\ndestination = "{folder}/conduit/{{device}}/fw.bin"\n'
        f"canary = 0\nconcurrency = {concurrency}\nverify = {str(verify).lower()}\n"
    )
    ours, rss, report = conduit_run(folder, job)
    summary = report["summary"]
    assert isinstance(summary, dict) and summary["ok"] == count, summary
    theirs = scp_loop(folder, key, known, source, targets, concurrency)
    print(
        f"{count:>7}  {concurrency:>11}  {ours:>10.2f}  {theirs:>10.2f}  "
        f"{ours / theirs:>5.2f}  {rss:>13.0f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="50,200", help="comma-separated device counts")
    parser.add_argument("--size", type=float, default=10, help="MiB pushed to each device")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sshds", type=int, default=4, help="loopback sshds shared by devices")
    parser.add_argument("--verify", action="store_true", help="Conduit reads every copy back")
    parser.add_argument("--quick", action="store_true", help="10 devices, 2 MiB")
    args = parser.parse_args()
    counts = [10] if args.quick else [int(n) for n in args.devices.split(",")]
    size = 2 if args.quick else args.size
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as temp:
        base = Path(temp)
        key = base / "id_ed25519"
        pub = keygen(key, "bench")
        sshds = [
            start_sshd(base / f"sshd{i}", client_keys=[pub], sftp=True) for i in range(args.sshds)
        ]
        try:
            known = base / "known_hosts"
            known.write_text("".join(f"[127.0.0.1]:{s.port} {s.host_key}\n" for s in sshds))
            source = base / "fw.bin"
            source.write_bytes(os.urandom(int(size * (1 << 20))))
            print(f"push {size:g} MiB, {args.sshds} sshds, verify={args.verify}")
            print("devices  concurrency  conduit s      scp s  ratio  conduit RSS MiB")
            for count in counts:
                one(base, sshds, key, known, source, count, args.concurrency, args.verify)
        finally:
            for sshd in sshds:
                sshd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
