"""Relay through Conduit vs ``scp -J`` through an OpenSSH jump host, to the same device.

The device is a real sshd with SFTP; the jump host is another sshd. The same
OpenSSH client moves the same file up and down both ways; the table gives
MB/s and the ratio Conduit/jump host (target: >= 0.5).

    python bench/bench_relay.py              # 1 GiB, 3 runs
    python bench/bench_relay.py --quick      # 256 MiB, 1 run
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.storage.relay.sshd import keygen, start_sshd  # noqa: E402

from bench.bench_gateway import CIPHER, free_port, wait_port  # noqa: E402
from bench.bench_gateway import sha256_file as sha256  # noqa: E402


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


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, timeout=3600)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1 << 30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--device-hash",
        action="store_true",
        help="verify custody with the device's sha256sum instead of reading back",
    )
    args = parser.parse_args()
    if args.quick:
        args.size, args.runs = 256 << 20, 1
    work = Path(tempfile.mkdtemp(prefix="conduit-relay-bench-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    user = os.environ.get("USER") or "root"
    client_key = work / "client"
    client_pub = keygen(client_key, "engineer")
    gateway_key = work / "gateway"
    gateway_pub = keygen(gateway_key, "gateway")
    device_root = work / "device-root"
    device_root.mkdir()
    device = start_sshd(work / "device", client_keys=[client_pub, gateway_pub], sftp=True)
    jump = start_sshd(work / "jump", client_keys=[client_pub], sftp=False)
    site = work / "conduit"
    site.mkdir()
    port = free_port()
    (site / "conduit.toml").write_text(
        f'[gateway]\nlisten = "127.0.0.1:{port}"\ndata_dir = "data"\n'
        "[gateway.limits]\nidle_timeout = 0\n"
        '[zones.ops]\nlevel = 3\nnetworks = ["127.0.0.0/8"]\n'
        f'[devices.plc]\nzone = "ops"\naddress = "{device.address}"\nuser = "root"\n'
        f'identity = "{gateway_key}"\nhost_key = "{device.host_key}"\n'
        f'protocols = ["sftp"]\nroot = "{device_root}"\n'
        + ('commands = { sha256 = "sha256sum -- {path}" }\n' if args.device_hash else "")
        + '[roles.r]\ngrants = [{ target = "devices/plc", ops = ["list", "read", "write"] }]\n'
        f'[users.{user}]\nkeys = ["{client_pub}"]\nroles = ["r"]\n'
    )
    conduit = subprocess.Popen(
        [sys.executable, "-m", "conduit", "serve", "--config", str(site / "conduit.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        wait_port(port, conduit)
        big = work / "big.bin"
        with big.open("wb") as f:
            for _ in range(args.size // (1 << 20)):
                f.write(os.urandom(1 << 20))
        digest = sha256(big)
        known = work / "known_hosts"
        opts = client_options(client_key, known)
        # What scp -J does, spelled as ProxyCommand so the hop uses the same key
        # and known_hosts options as the final connection.
        hop = " ".join(
            [
                "ssh",
                *(o for o in opts if o != "-c" and o != CIPHER),
                "-c",
                CIPHER,
                "-p",
                str(jump.port),
                "-W",
                "%h:%p",
                f"{user}@127.0.0.1",
            ]
        )
        jump_spec = f"-oProxyCommand={hop}"
        ways = {
            "jump host (scp -J)": (
                ["scp", "-q", *opts, jump_spec, "-P", str(device.port)],
                f"{user}@127.0.0.1:{device_root}/big.bin",
            ),
            "Conduit relay": (
                ["scp", "-q", *opts, "-P", str(port)],
                f"{user}@127.0.0.1:/devices/plc/big.bin",
            ),
        }
        results: dict[tuple[str, str], float] = {}
        down = work / "down.bin"
        for name, (base, remote) in ways.items():
            ups, downs = [], []
            for _ in range(args.runs):
                (device_root / "big.bin").unlink(missing_ok=True)
                ups.append(timed([*base, str(big), remote]))
                assert sha256(device_root / "big.bin") == digest, f"{name}: corrupt upload"
                down.unlink(missing_ok=True)
                downs.append(timed([*base, remote, str(down)]))
                assert sha256(down) == digest, f"{name}: corrupt download"
            results[(name, "up")] = args.size / statistics.median(ups) / 1e6
            results[(name, "down")] = args.size / statistics.median(downs) / 1e6
    finally:
        conduit.terminate()
        conduit.wait(10)
        device.stop()
        jump.stop()
    lines = [
        f"{args.size >> 20} MiB, {args.runs} run(s), median; {CIPHER}; loopback; "
        f"{os.cpu_count()} cores",
        "",
        "| direction | jump host MB/s | Conduit MB/s | Conduit/jump |",
        "|---|---:|---:|---:|",
    ]
    for direction in ("up", "down"):
        jump_rate = results[("jump host (scp -J)", direction)]
        relay_rate = results[("Conduit relay", direction)]
        lines.append(
            f"| {direction} | {jump_rate:.1f} | {relay_rate:.1f} | {relay_rate / jump_rate:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "relay.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
