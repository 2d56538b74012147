"""Relay through Conduit vs ``scp -J`` through an OpenSSH jump host, to the same device.

The device is a real sshd with SFTP; the jump host is another sshd. The same
OpenSSH client moves the same file up and down both ways; the table gives
MB/s and the ratio Conduit/jump host (issue #16: >= 0.8 with `--device-hash`,
>= 0.7 with read-back), and the gateway's CPU seconds per transfer.

    python bench/bench_relay.py              # 1 GiB, 3 runs
    python bench/bench_relay.py --quick      # 256 MiB, 1 run
    python bench/bench_relay.py --size 256MiB --baseline /tmp/old   # A/B, interleaved
    python bench/bench_relay.py --profile bench/results/relay        # flame graphs

``--baseline DIR`` runs a second gateway from ``DIR/src`` (e.g. ``git archive
main src | tar -x -C DIR``) beside this tree's, the runs of every way
interleaved, so a change is measured against its base under the same load.
``--profile PREFIX`` records a py-spy flame graph of this tree's gateway for
each direction (``PREFIX-up.svg``, ``PREFIX-down.svg``; the baseline's as
``PREFIX-baseline-up.svg`` ...) in the first round, which is then left out of
the CPU column (``--raw``: py-spy's raw stacks, ``.txt``, to count self time).
``--direction down`` (or ``up``) measures one direction only.
``--phases`` runs this tree's gateway under ``bench/relay_phases.py`` and
prints, per upload, when each step after the client's last byte ended (the
journal's intent, the device's last write answers, the close, custody, the
rename, the client's exit) and the CPU seconds of the gateway, the device's
``sshd`` (its sessions, ``sftp-server`` and commands) and the client.

The CPU column is the gateway process's CPU seconds per transfer, its main
thread's (the event loop's) in brackets: with work on helper threads (hashing)
the loop is what bounds a transfer on a gateway with idle cores, and the
process total what it costs on a busy one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.storage.relay.sshd import Sshd, _descendants, keygen, start_sshd  # noqa: E402

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


def timed(argv: list[str], profile: tuple[int, str] | None = None) -> float:
    spy = None
    if profile is not None:
        pid, svg = profile
        svg = str(Path(svg).resolve())
        form = "raw" if svg.endswith(".txt") else "flamegraph"
        spy = subprocess.Popen(
            ["py-spy", "record", "-r", "200", "-f", form, "-o", svg, "--pid", str(pid)],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # py-spy attaches
    started = time.perf_counter()
    subprocess.run(argv, check=True, timeout=3600)
    elapsed = time.perf_counter() - started
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    return elapsed


def cpu_seconds(pid: int, *, loop_only: bool = False) -> float:
    """User + system CPU of a process so far (Linux); less at the mercy of load than wall time.

    ``loop_only``: of its main thread alone (the event loop), which bounds a
    transfer when the box has idle cores.
    """
    stat = f"/proc/{pid}/task/{pid}/stat" if loop_only else f"/proc/{pid}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and everything below it, with the children it reaped."""
    total = 0.0
    for one in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def client_cpu() -> float:
    """CPU seconds of the children this process reaped (the scp and its ssh)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


PHASES = (
    ("intent_done", "intent"),
    ("writes_answered", "writes answered"),
    ("closed", "closed"),
    ("custody_done", "device hash"),
    ("read_back_done", "read-back"),
    ("renamed", "renamed"),
    ("done", "committed"),
)


def phase_line(stamps: dict[str, float], started: float, ended: float) -> str:
    """When each step after the client's last byte ended, in seconds after that byte."""
    last = stamps["last_byte"]
    parts = [f"last byte at {last - started:.2f} s"]
    for key, label in PHASES:
        if key in stamps:
            parts.append(f"{label} +{stamps[key] - last:.2f}")
    parts.append(f"client exit +{ended - last:.2f}")
    if "read_back_at_last_byte" in stamps:
        parts.append(f"read back at last byte {stamps['read_back_at_last_byte'] / 2**20:.0f} MiB")
    return ", ".join(parts)


def size_arg(text: str) -> int:
    """``1073741824``, ``256MiB`` or ``1GiB``."""
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=size_arg, default=1 << 30)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run a gateway from BASELINE/src, runs interleaved (A/B)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        help="the device's max_concurrency for this tree's gateway (the baseline keeps 4)",
    )
    parser.add_argument("--profile", help="py-spy flame graphs PREFIX-up.svg / PREFIX-down.svg")
    parser.add_argument(
        "--raw", action="store_true", help="with --profile: py-spy's raw stacks (.txt), not SVG"
    )
    parser.add_argument(
        "--phases", action="store_true", help="time each upload's steps and CPU (see above)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--direction",
        choices=("both", "up", "down"),
        default="both",
        help="only one direction (down: the file is put on the device directly)",
    )
    parser.add_argument(
        "--device-hash",
        action="store_true",
        help="verify custody with the device's sha256sum instead of reading back",
    )
    parser.add_argument(
        "--hash-command",
        default="sha256sum -- {path}",
        help="with --device-hash: the device's sha256 template (e.g. 'openssl dgst -sha256 -r "
        "-- {path}', to see what a faster hash on the device gives)",
    )
    args = parser.parse_args()
    if args.quick:
        args.size, args.runs = 256 << 20, 1
    work = Path(tempfile.mkdtemp(prefix="conduit-relay-bench-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def start_gateway(
    args: argparse.Namespace,
    site: Path,
    src: Path,
    device: Sshd,
    device_root: Path,
    gateway_key: Path,
    client_pub: str,
    user: str,
) -> tuple[subprocess.Popen[bytes], int]:
    """A gateway running the code in ``src``, relaying /devices/plc to the device."""
    site.mkdir()
    port = free_port()
    (site / "conduit.toml").write_text(
        f'[gateway]\nlisten = "127.0.0.1:{port}"\ndata_dir = "data"\n'
        "[gateway.limits]\nidle_timeout = 0\n"
        '[zones.ops]\nlevel = 3\nnetworks = ["127.0.0.0/8"]\n'
        f'[devices.plc]\nzone = "ops"\naddress = "{device.address}"\nuser = "root"\n'
        f'identity = "{gateway_key}"\nhost_key = "{device.host_key}"\n'
        f'protocols = ["sftp"]\nroot = "{device_root}"\n'
        + (
            f"max_concurrency = {args.max_concurrency}\n"
            if args.max_concurrency and src.resolve() == (ROOT / "src").resolve()
            else ""
        )
        + (f'commands = {{ sha256 = "{args.hash_command}" }}\n' if args.device_hash else "")
        + '[roles.r]\ngrants = [{ target = "devices/plc", ops = ["list", "read", "write"] }]\n'
        f'[users.{user}]\nkeys = ["{client_pub}"]\nroles = ["r"]\n'
    )
    phases = args.phases and src.resolve() == (ROOT / "src").resolve()
    launcher = [str(ROOT / "bench" / "relay_phases.py")] if phases else ["-m", "conduit"]
    conduit = subprocess.Popen(
        [sys.executable, *launcher, "serve", "--config", str(site / "conduit.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={
            **os.environ,
            "PYTHONPATH": str(src),
            **({"CONDUIT_PHASES": str(site / "phases.jsonl")} if phases else {}),
        },
        cwd=site,
    )
    wait_port(port, conduit)
    return conduit, port


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
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    cpu_s: dict[tuple[str, str], float] = {}
    loop_s: dict[tuple[str, str], float] = {}
    sources = {"Conduit relay": ROOT / "src"}
    if args.baseline is not None:
        sources["Conduit baseline"] = args.baseline.resolve() / "src"
    try:
        for label, src in sources.items():
            gateways[label] = start_gateway(
                args,
                work / label.replace(" ", "-"),
                src,
                device,
                device_root,
                gateway_key,
                client_pub,
                user,
            )
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
        }
        for label, (_, port) in gateways.items():
            ways[label] = (
                ["scp", "-q", *opts, "-P", str(port)],
                f"{user}@127.0.0.1:/devices/plc/big.bin",
            )
        times: dict[tuple[str, str], list[float]] = {
            (name, way): [] for name in ways for way in ("up", "down")
        }
        cpu: dict[tuple[str, str], list[float]] = {key: [] for key in times}
        loop_cpu: dict[tuple[str, str], list[float]] = {key: [] for key in times}
        down = work / "down.bin"
        directions = ("up", "down") if args.direction == "both" else (args.direction,)
        if directions == ("down",):
            shutil.copyfile(big, device_root / "big.bin")
        for run_number in range(args.runs):
            # Interleaved: every way once per round, so load drifts hit all of them.
            for name, (base, remote) in ways.items():
                profile, prefix = None, args.profile
                if args.profile and name in gateways and run_number == 0:
                    profile = gateways[name][0].pid
                    prefix += "-baseline" if name == "Conduit baseline" else ""
                pid = gateways[name][0].pid if name in gateways else None
                for direction in directions:
                    if direction == "up":
                        (device_root / "big.bin").unlink(missing_ok=True)
                        argv = [*base, str(big), remote]
                    else:
                        down.unlink(missing_ok=True)
                        argv = [*base, remote, str(down)]
                    spy = (
                        (profile, f"{prefix}-{direction}{'.txt' if args.raw else '.svg'}")
                        if profile
                        else None
                    )
                    before = cpu_seconds(pid) if pid else 0.0
                    loop_before = cpu_seconds(pid, loop_only=True) if pid else 0.0
                    others = (tree_cpu(device.process.pid), tree_cpu(jump.process.pid))
                    mine = client_cpu()
                    started = time.time()
                    times[(name, direction)].append(timed(argv, spy))
                    ended = time.time()
                    if args.phases:
                        print(
                            f"{name} {direction} run {run_number + 1}: "
                            f"{ended - started:.2f} s; CPU s: gateway "
                            f"{cpu_seconds(pid) - before if pid else 0.0:.2f}, device sshd "
                            f"{tree_cpu(device.process.pid) - others[0]:.2f}, jump sshd "
                            f"{tree_cpu(jump.process.pid) - others[1]:.2f}, client "
                            f"{client_cpu() - mine:.2f}; load {os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
                        log = work / name.replace(" ", "-") / "phases.jsonl"
                        if direction == "up" and log.exists():
                            stamps = json.loads(log.read_text().splitlines()[-1])
                            print("    " + phase_line(stamps, started, ended), flush=True)
                    if pid and not spy:
                        cpu[(name, direction)].append(cpu_seconds(pid) - before)
                        loop_cpu[(name, direction)].append(
                            cpu_seconds(pid, loop_only=True) - loop_before
                        )
                    landed = device_root / "big.bin" if direction == "up" else down
                    assert sha256(landed) == digest, f"{name}: corrupt {direction}load"
        results = {
            key: args.size / statistics.median(runs) / 1e6 for key, runs in times.items() if runs
        }
        cpu_s.update({key: statistics.median(runs) for key, runs in cpu.items() if runs})
        loop_s.update({key: statistics.median(runs) for key, runs in loop_cpu.items() if runs})
    finally:
        for proc, _ in gateways.values():
            proc.terminate()
            proc.wait(10)
        device.stop()
        jump.stop()
    lines = [
        f"{args.size >> 20} MiB, {args.runs} run(s), median; {CIPHER}; loopback; "
        f"{os.cpu_count()} cores",
        "",
        f"custody: {'device `' + args.hash_command + '`' if args.device_hash else 'read-back'}; "
        f"load average {os.getloadavg()[0]:.1f}",
        "",
        "| direction | jump host MB/s | Conduit MB/s | Conduit/jump | Conduit CPU s (loop) |"
        + (" baseline MB/s | baseline/jump | baseline CPU s (loop) |" if args.baseline else ""),
        "|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if args.baseline else ""),
    ]

    def cpu_text(name: str, direction: str) -> str:
        nan = float("nan")
        return f"{cpu_s.get((name, direction), nan):.2f} ({loop_s.get((name, direction), nan):.2f})"

    for direction in directions:
        jump_rate = results[("jump host (scp -J)", direction)]
        relay_rate = results[("Conduit relay", direction)]
        line = (
            f"| {direction} | {jump_rate:.1f} | {relay_rate:.1f} | {relay_rate / jump_rate:.2f} "
            f"| {cpu_text('Conduit relay', direction)} |"
        )
        if args.baseline:
            base_rate = results[("Conduit baseline", direction)]
            base = cpu_text("Conduit baseline", direction)
            line += f" {base_rate:.1f} | {base_rate / jump_rate:.2f} | {base} |"
        lines.append(line)
    table = "\n".join(lines)
    print(table)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "relay.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
