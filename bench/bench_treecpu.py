"""A small file's server CPU, this tree against an older one, alternating.

    python bench/bench_treecpu.py --base /tmp/old [--files 1000] [--reps 5]
        [--rows down-sftp,up-scp-O] [--fsync] [--ssh] [--calls]

One OpenSSH client row of ``bench_gateway.py``'s tree (same transfers, same
checks: its ``Bench``), run against two Conduit servers, the code of
``--base`` (A: e.g. ``git archive OLD | tar -x -C /tmp/old``) and this tree's
(B), one after the other in every repetition, in alternating order, so both
see the machine's load alike. Printed per row: the server's CPU per file
(user + system, from /proc; each repetition's figure in brackets), B/A, the
files per second and, with ``--ssh``, each one's ratio against sshd in the
same repetitions. ``--no-fsync`` is the default here (like-for-like: the
gateway's own work); ``--fsync`` runs Conduit as shipped.

On this shared 2-core machine CPU per file moves by 10-20 % between runs of
the same code; ``--calls`` adds the one figure that does not move: Python
function calls per file (each server run again under cProfile for 1 and for
``--files`` files, the difference divided by the files).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent


def load(root: Path, tag: str) -> ModuleType:
    """``root``'s bench_gateway module (its Conduit runs ``root``'s src)."""
    spec = importlib.util.spec_from_file_location(f"bg_{tag}", root / "bench/bench_gateway.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cpu(pid: int) -> tuple[float, float]:
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / tick, int(fields[12]) / tick


def bench(module: ModuleType, files: int, fsync: bool, pin: bool = False) -> Any:
    args = argparse.Namespace(
        size=1024 * 1024,
        files=files,
        runs=1,
        quick=False,
        only=[],
        sftp_server="internal",
        profile=None,
        audit_cost=False,
        no_fsync=not fsync,
        respawn=False,
        pin=pin,
        each=False,
        serve_without_audit=False,
        config=None,
        tmp=None,
        keep=False,
    )
    return module.Bench(args)


def calls(root: Path, row: str, files: int, fsync: bool) -> float:
    """Python calls per file of ``root``'s server for ``row`` (cProfile, n - 1 files)."""
    totals = []
    for n in (1, files + 1):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "prof"
            argv = [sys.executable, __file__, "--profile-one", str(root), row, str(n)]
            argv += ["--fsync"] if fsync else []
            subprocess.run([*argv, "--out", str(out)], check=True, capture_output=True)
            totals.append(sum(v[1] for v in pstats.Stats(str(out)).stats.values()))
    return (totals[1] - totals[0]) / files


def profile_one(root: Path, row: str, files: int, fsync: bool, out: str) -> None:
    """Child of :func:`calls`: one transfer of ``files`` files, the server under cProfile."""
    module = load(root, "p")
    real = subprocess.Popen

    class Popen(real):  # type: ignore[misc, type-arg]
        def __init__(self, argv: list[str], *args: Any, **kwargs: Any) -> None:
            if argv[:3] == [sys.executable, "-m", "conduit"]:
                argv = [sys.executable, "-m", "cProfile", "-o", out, *argv[1:]]
            super().__init__(argv, *args, **kwargs)

    module.subprocess.Popen = Popen
    b = bench(module, files, fsync)
    b.setup()
    try:
        direction, client = row.split("-", 1)
        b.transfer(module.Row("tree", direction, client), b.servers["Conduit"])
    finally:
        b.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, help="the older tree (A)")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rows", default="down-sftp,down-scp,down-scp-O,up-sftp,up-scp,up-scp-O")
    ap.add_argument("--fsync", action="store_true", help="Conduit as shipped")
    ap.add_argument("--ssh", action="store_true", help="also time sshd, for the ratios")
    ap.add_argument("--pin", action="store_true", help="bench_gateway's --pin")
    ap.add_argument("--calls", action="store_true", help="also Python calls per file")
    ap.add_argument("--profile-one", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.profile_one:
        root, row, n = a.profile_one
        profile_one(Path(root), row, int(n), a.fsync, a.out)
        return 0
    if a.base is None:
        ap.error("--base is required")
    trees = {"A": a.base.resolve(), "B": HERE.parent}
    benches = {}
    for tag, root in trees.items():
        module = load(root, tag)
        b = bench(module, a.files, a.fsync, a.pin)
        b.setup()
        benches[tag] = (module, b)
    rows = []
    for name in a.rows.split(","):
        direction, client = name.split("-", 1)
        rows.append(benches["A"][0].Row("tree", direction, client))
    used: dict[tuple[str, str], list[tuple[float, float]]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    print(f"load {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for rep in range(a.reps):
            for row in rows:
                for tag in "AB" if rep % 2 == 0 else "BA":
                    _, b = benches[tag]
                    server = b.servers["Conduit"]
                    u0, s0 = cpu(server.proc.pid)
                    seconds = b.transfer(row, server)
                    u1, s1 = cpu(server.proc.pid)
                    per = ((u1 - u0) / a.files * 1e6, (s1 - s0) / a.files * 1e6)
                    used.setdefault((row.label, tag), []).append(per)
                    wall.setdefault((row.label, tag), []).append(seconds)
                if a.ssh:
                    _, b = benches["A"]
                    seconds = b.transfer(row, b.servers["OpenSSH"])
                    wall.setdefault((row.label, "ssh"), []).append(seconds)
        print(f"load {os.getloadavg()[0]:.2f}")
    finally:
        for _, b in benches.values():
            b.stop()
    print(f"\n{'row':16} server CPU µs/file: A (user+sys) [each]  |  B  |  B/A  |  files/s A / B")
    for row in rows:
        cells = []
        for tag in "AB":
            per = used[(row.label, tag)]
            total = [u + s for u, s in per]
            user = statistics.median(u for u, _ in per)
            system = statistics.median(s for _, s in per)
            each = ",".join(f"{t:.0f}" for t in total)
            cells.append(f"{statistics.median(total):5.0f} ({user:.0f}+{system:.0f}) [{each}]")
        ma, mb = (statistics.median(u + s for u, s in used[(row.label, t)]) for t in "AB")
        fa, fb = (a.files / statistics.median(wall[(row.label, t)]) for t in "AB")
        line = f"{row.label:16} {cells[0]}  |  {cells[1]}  |  {mb / ma:.2f}  |  {fa:.0f} / {fb:.0f}"
        if a.ssh:
            fs = a.files / statistics.median(wall[(row.label, "ssh")])
            line += f"  |  ratio to sshd {fa / fs:.2f} / {fb / fs:.2f}"
        print(line, flush=True)
    if a.calls:
        print("\nPython calls per file (cProfile):")
        for row in rows:
            name = f"{row.direction}-{row.client}"
            ca, cb = (calls(trees[t], name, a.files, a.fsync) for t in "AB")
            print(f"{row.label:16} A {ca:.0f}  B {cb:.0f}  B/A {cb / ca:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
