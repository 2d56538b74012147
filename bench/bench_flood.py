"""Logins from one address while another floods the gateway with connections.

Starts ``python -m conduit serve`` on a policy of its own (loopback, a fresh
key), then logs in ``--logins`` times, one after another, with OpenSSH
``sftp -b`` (``ls /``) from 127.0.0.1: once with no flood, then while
``tests/support/flood.py`` runs from 127.0.0.3 (its own process: ``--rate``
new connections/s, at most ``--max-open`` open, an SSH banner on each, for as
long as the logins take and at most 120 s). Prints, per row, the success rate,
the median and 95th percentile login time, what the flooder managed, and the
gateway's CPU time. Each login has a 60 s timeout; a login counts as a success
when sftp exits 0 and lists ``/inbox``.

Rows: ``no flood``; ``flood`` (the limits as shipped); ``flood, no per-source
cap`` (``max_startups_per_source`` raised to 10,000, so only the
``max_startups`` rules act).

Usage::

    python bench/bench_flood.py                    # 30 logins per row
    python bench/bench_flood.py --logins 10 --rate 1600 --max-open 300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOODER = ROOT / "tests" / "support" / "flood.py"


def policy(folder: Path, pub: str, limits: str) -> str:
    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{folder}/data"

[gateway.limits]
idle_timeout = 0
{limits}

[audit]
journal = "{folder}/data/audit"

[zones.local]
level = 3
networks = ["127.0.0.0/8"]

[areas.inbox]
zone = "local"
path = "{folder}/inbox"

[roles.engineer]
grants = [{{ target = "inbox", ops = ["list", "read"] }}]

[users.bench]
keys = ["{pub}"]
roles = ["engineer"]
"""


def serve(config: Path) -> tuple[subprocess.Popen[str], int, Path]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "conduit", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    port = 0
    for line in process.stdout:
        if line.startswith("Conduit gateway listening on"):
            port = int(line.rsplit(":", 1)[1])
        if line.strip().startswith("sftp -P"):
            break
    host_key = " ".join((config.parent / "data" / "host_ed25519.pub").read_text().split()[:2])
    known = config.parent / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    return process, port, known


def login(port: int, known: Path, key: Path) -> tuple[bool, float]:
    argv = [
        "sftp",
        "-b",
        "-",
        "-P",
        str(port),
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "ConnectTimeout=60",
        "-i",
        str(key),
        "bench@127.0.0.1",
    ]
    started = time.perf_counter()
    try:
        result = subprocess.run(argv, input="ls /\n", capture_output=True, text=True, timeout=60)
        ok = result.returncode == 0 and "inbox" in result.stdout
    except subprocess.TimeoutExpired:
        ok = False
    return ok, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def row(name: str, folder: Path, key: Path, limits: str, args: argparse.Namespace) -> str:
    folder.mkdir()
    config = folder / "conduit.toml"
    config.write_text(policy(folder, key.with_suffix(".pub").read_text().strip(), limits))
    process, port, known = serve(config)
    flooder = None
    try:
        login(port, known, key)  # warm up (first login writes known files etc.)
        cpu0 = cpu_seconds(process.pid)
        if args.flood:
            flooder = subprocess.Popen(
                [
                    sys.executable,
                    str(FLOODER),
                    str(port),
                    "--rate",
                    str(args.rate),
                    "--max-open",
                    str(args.max_open),
                    "--duration",
                    "120",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.0)
        results = [login(port, known, key) for _ in range(args.logins)]
        flood_text = "-"
        if flooder is not None:
            flooder.terminate()
            out, _ = flooder.communicate(timeout=30)
            stats = json.loads(out)
            rate = stats["attempts"] / max(stats["seconds"], 0.001)
            flood_text = f"{stats['attempts']:,} at {rate:,.0f}/s"
        cpu = cpu_seconds(process.pid) - cpu0
    finally:
        if flooder is not None and flooder.poll() is None:
            flooder.kill()
        process.terminate()
        process.wait(30)
    good = [t for ok, t in results if ok]
    rate = 100 * len(good) / len(results)
    times = sorted(t for _, t in results)
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    median = statistics.median(times)
    return (
        f"| {name} | {len(good)}/{len(results)} ({rate:.0f} %) | {median * 1000:.0f} | "
        f"{p95 * 1000:.0f} | {flood_text} | {cpu:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logins", type=int, default=30)
    parser.add_argument("--rate", type=float, default=1600.0)
    parser.add_argument("--max-open", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        folder = Path(tmp)
        key = folder / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        print("| row | logins ok | median ms | p95 ms | flood connections | gateway CPU s |")
        print("|---|---:|---:|---:|---:|---:|")
        rows = [
            ("no flood", "", False),
            ("flood from 127.0.0.3", "", True),
            ("flood, no per-source cap", "max_startups_per_source = 10000", True),
        ]
        for index, (name, limits, flood) in enumerate(rows):
            args.flood = flood
            print(row(name, folder / f"row{index}", key, limits, args), flush=True)


if __name__ == "__main__":
    main()
