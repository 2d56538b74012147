"""The quarantine's cost: one big upload through a conduit whose files pass a
stream check in quarantine, against the same upload through a conduit
without obligations.

A gateway runs in this process (its real journal, durable uploads) with the
test-only checks of ``tests/inspect/checks.py`` (a stream check that sees
every byte as it arrives); ``sftp put`` sends the same file alternately to
``/plain`` (no obligations: straight into the area) and ``/scan`` (into
quarantine, checked while streaming, committed into the area by rename
before the client returns). Prints MiB/s per row and the ratio; the real
scanners' cost (clamd, signatures) is measured where they are built.

``--real`` is the issue's row with the real checks instead: the same
upload through a conduit requiring ``signature`` + ``scan`` (a real clamd
started here with the tests' database, an OpenSSH signature sent first)
against the same conduit shape without checks; fresh bytes for every pass
(clamd answers a repeat of clean bytes from its cache). It prints the
per-check durations the journal recorded.

Usage::

    python bench/bench_quarantine.py                # 256 MiB, 3 runs
    python bench/bench_quarantine.py --size 64 --runs 1
    python bench/bench_quarantine.py --real --runs 1
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.gateway.test_quarantine import policy  # noqa: E402
from tests.inspect.checks import ChecksForTests  # noqa: E402
from tests.support.gateway import make_key, random_file, start_gateway, stop_gateway  # noqa: E402

from conduit.config import parse  # noqa: E402

PLAIN = """
[areas.plain]
zone = "plant"
path = "{root}/areas/plain"

[roles.plainwriter]
grants = [{{ target = "plain", ops = ["list", "read", "write"] }}]

[[conduits]]
name = "plain"
from = "local"
to = "plant"
paths = ["plain/**"]
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256, help="MiB (default 256)")
    p.add_argument("--runs", type=int, default=3, help="runs per row, median (default 3)")
    p.add_argument("--real", action="store_true", help="signature + scan with real clamd")
    args = p.parse_args(argv)
    if args.real:
        return real(args.size, args.runs)
    root = Path(tempfile.mkdtemp(prefix="conduit-bench-quarantine-"))
    try:
        keys = {n: make_key(root, n) for n in ("alice", "bob", "mallory")}
        text = policy(root, keys) + PLAIN.format(root=root)
        text = text.replace('roles = ["engineer"]', 'roles = ["engineer", "plainwriter"]')
        config = parse(text, source=root / "conduit.toml")
        gw = start_gateway(config, keys, root, "journal", checks=ChecksForTests())
        src = random_file(root / "big.bin", args.size * 1024 * 1024)
        times: dict[str, list[float]] = {"plain": [], "scan": []}
        try:
            for run in range(args.runs):
                for row in times:
                    started = time.monotonic()
                    done = gw.sftp(f"put {src} /{row}/big-{run}.bin\n", timeout=900)
                    if done.returncode != 0:
                        print(f"{row}: upload failed: {done.stderr.strip()}", file=sys.stderr)
                        return 1
                    times[row].append(time.monotonic() - started)
        finally:
            stop_gateway(gw)
        rate = {row: args.size / statistics.median(t) for row, t in times.items()}
        print(f"| upload {args.size} MiB (sftp) | MiB/s |")
        print("|---|---|")
        print(f"| conduit without obligations | {rate['plain']:.1f} |")
        print(f"| conduit with a stream check, via quarantine | {rate['scan']:.1f} |")
        print(f"| ratio | {rate['scan'] / rate['plain']:.2f} |")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def real(size: int, runs: int) -> int:
    """signature + scan (real clamd, ssh-keygen) against no checks, sftp."""
    from tests.gateway.test_inspection_e2e import policy as inspection_policy
    from tests.support.clamd import start_clamd, stop_clamd
    from tests.support.signers import ssh_key, ssh_sign

    from conduit.inspect.items import Items
    from conduit.state import StateDB

    root = Path(tempfile.mkdtemp(prefix="conduit-bench-inspection-"))
    (root / "clamd-home").mkdir()
    clamd = start_clamd(root / "clamd-home")
    try:
        keys = {n: make_key(root, n) for n in ("alice", "bob")}
        vendor = ssh_key(root, "vendor")
        (root / "trust").mkdir()
        (root / "trust" / "allowed_signers").write_text(
            f'v@example.com namespaces="firmware" {vendor.with_suffix(".pub").read_text()}'
        )
        text = inspection_policy(root, keys, clamd) + PLAIN.format(root=root)
        text = text.replace('roles = ["engineer"]', 'roles = ["engineer", "plainwriter"]')
        for line in ("openpgp_keys", "sha256_lists"):  # an OpenSSH signature only
            text = "\n".join(t for t in text.splitlines() if not t.startswith(line))
        text = text.replace("signature_grace = 4", "signature_grace = 600")
        text = text.replace("timeout = 10", "timeout = 600")  # clamd's scan of the whole file
        config = parse(text, source=root / "conduit.toml")
        gw = start_gateway(config, keys, root, "journal")  # the real Inspector
        times: dict[str, list[float]] = {"plain": [], "fw": [], "clamd": []}
        verdicts: list[list[dict[str, object]]] = []
        try:
            for run in range(runs):
                for row in times:
                    src = random_file(root / f"{row}-{run}.bin", size * 1024 * 1024)
                    if row == "clamd":  # clamd alone on such a file: its scan after the end
                        times[row].append(clamd_scan(clamd.socket, src))
                        src.unlink()
                        continue
                    if row == "fw":
                        sig = ssh_sign(vendor, src, "firmware")
                        gw.sftp(f"put {sig} /fw/{src.name}.sig\n", timeout=60)
                    started = time.monotonic()
                    done = gw.sftp(f"put {src} /{row}/{src.name}\n", timeout=900)
                    if done.returncode != 0:
                        print(f"{row}: upload failed: {done.stderr.strip()}", file=sys.stderr)
                        return 1
                    times[row].append(time.monotonic() - started)
                    src.unlink()
                    if row == "fw":
                        items = Items(StateDB.open(config.gateway.data_dir))
                        item = items.find(path=f"/fw/{src.name}")[0]
                        verdicts.append(item.verdicts)
                        print(f"run {run}: {item.state}: {item.reason}", file=sys.stderr)
        finally:
            stop_gateway(gw)
        rate = {row: size / statistics.median(t) for row, t in times.items()}
        print(f"| upload {size} MiB (OpenSSH sftp) | MiB/s |")
        print("|---|---|")
        print(f"| conduit without checks | {rate['plain']:.1f} |")
        print(f"| conduit requiring signature + scan (clamd, ssh-keygen) | {rate['fw']:.1f} |")
        print(f"| ratio | {rate['fw'] / rate['plain']:.2f} |")
        plain, scan = size / rate["plain"], statistics.median(times["clamd"])
        alone = f"{scan:.2f}, {size / scan:.1f}"
        print(f"| clamd alone: INSTREAM end to verdict (s, MiB/s) | {alone} |")
        print(f"| bound: plain / (plain + clamd alone) | {plain / (plain + scan):.2f} |")
        for run, found in enumerate(verdicts):
            line = ", ".join(
                f"{v['check']} {v['state']} {float(str(v['duration'])):.2f} s" for v in found
            )
            print(f"journal, run {run}: {line}")
        return 0
    finally:
        stop_clamd(clamd)
        shutil.rmtree(root, ignore_errors=True)


def clamd_scan(sock: Path, path: Path) -> float:
    """Seconds clamd takes from the end of an ``INSTREAM`` of ``path`` to its
    verdict: what a client waits for beyond its upload, with no gateway."""
    import socket
    import struct

    with socket.socket(socket.AF_UNIX) as s, path.open("rb") as f:
        s.connect(str(sock))
        s.sendall(b"zINSTREAM\0")
        while chunk := f.read(1024 * 1024):
            s.sendall(struct.pack(">I", len(chunk)) + chunk)
        started = time.monotonic()
        s.sendall(struct.pack(">I", 0))
        reply = b""
        while not reply.endswith(b"\0"):
            more = s.recv(4096)
            if not more:
                break
            reply += more
        spent = time.monotonic() - started
    if reply != b"stream: OK\0":
        raise RuntimeError(f"clamd: {reply!r}")
    return spent


if __name__ == "__main__":
    sys.exit(main())
