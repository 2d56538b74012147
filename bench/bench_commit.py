"""A durable small upload's latency on the client's path, journal and all, in one process.

    python bench/bench_commit.py [--files 500] [--rounds 3] [--place auto|loop|thread]

What a session does for each file of a 4 KiB tree upload (open, write, close)
through the real objects: :class:`~conduit.gateway.operations.Operations`
with a compiled policy, a durable :class:`~conduit.storage.local.LocalBackend`
(``durable_uploads = true``) and a real :class:`~conduit.audit.Auditor`
journal with ``fsync = "always"``: the commit's intent flush, the file's data
flush, the rename and the folder's flush, as shipped, without SSH. Prints the
median wall time per file and of its commit alone (what a sequential client
waits for after its last write: its ``close``), the process CPU per file (all
threads), and how many of the run's durable journal appends ran
on the event loop rather than the flusher thread. It also prints the disk's
floor: the same flushes as plain system calls in the same order (the intent's
fdatasync beside the file's fsync, the rename, the folder's fsync; the outcome
record is written and rides the next flush), what no code above the disk can
take off a file's time.

Over SSH (``bench_gateway.py --only tree --only up``) a 500-file row moves by
a third between runs on a shared 2-core machine; the flushes themselves are
what this one isolates. ``--place`` forces where the journal's durable append
runs (``INLINE_SYNC_MAX``), as ``bench_audit_cpu.py --flush`` does. Run
before/after alternately (a detached worktree of the old code, this file
copied in); put it on the disk the gateway uses with ``--tmp``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from ipaddress import ip_address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_smallfile import SITE, SIZE, Site  # the same site, one file at a time
from conduit.audit import Auditor, flushplace
from conduit.config import parse
from conduit.config.model import AuditConfig
from conduit.gateway.context import SessionInfo
from conduit.gateway.operations import Operations
from conduit.gateway.vfs import resolve
from conduit.policy import Policy
from conduit.storage.local import LocalBackend


async def uploads(ops: Operations, names: list[str]) -> tuple[list[float], list[float]]:
    """Each file's wall time, whole and its commit (the client's ``close``) alone."""
    payload = os.urandom(SIZE)
    times, commits = [], []
    for name in names:
        started = time.perf_counter()
        upload = await ops.open_write(resolve(name))
        await upload.write(0, payload)
        committing = time.perf_counter()
        await upload.commit()
        ended = time.perf_counter()
        times.append(ended - started)
        commits.append(ended - committing)
    return times, commits


async def one(files: int, root: Path) -> tuple[float, float, float, float]:
    config = parse(SITE.format(root=root), source=root / "conduit.toml")
    areas = {name: LocalBackend(name, a.path, durable=True) for name, a in config.areas.items()}
    audit = AuditConfig(journal=root / "audit", fsync="always")
    auditor = await Auditor.open(audit, node="bench", key_dir=root)
    place = auditor._place
    on_loop = 0
    here = place.append_here

    def counted(items: Any) -> Any:
        nonlocal on_loop
        on_loop += 1
        return here(items)

    place.append_here = counted  # type: ignore[method-assign]
    try:
        site = Site(Policy(config), areas, auditor)
        session = SessionInfo("0123456789abcdef", "alice", ip_address("127.0.0.1"), "ops", "sftp")
        ops = Operations(site, session)
        (root / "bench" / "tree").mkdir(parents=True, exist_ok=True)
        names = [f"/bench/tree/f{i:05d}.dat" for i in range(files)]
        await uploads(ops, [f"/bench/tree/w{i:05d}.dat" for i in range(100)])  # warm
        on_loop = 0
        p0 = time.process_time()
        times, commits = await uploads(ops, names)
        p1 = time.process_time()
    finally:
        await auditor.close()
    wall, commit = statistics.median(times) * 1e6, statistics.median(commits) * 1e6
    return wall, commit, (p1 - p0) / files * 1e6, on_loop / files


def floor(files: int, root: Path) -> float:
    """The median wall time per file of a durable upload's flushes alone."""
    folder = root / "floor"
    folder.mkdir()
    journal = os.open(root / "journal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    directory = os.open(folder, os.O_RDONLY)
    record, payload = b"r" * 400 + b"\n", os.urandom(SIZE)
    times = []
    try:
        for i in range(files):
            started = time.perf_counter()
            temp = folder / f".f{i:05d}.part"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, payload)
            data = threading.Thread(target=os.fsync, args=(fd,))
            data.start()  # the data flush beside the intent's, as the commit does
            os.write(journal, record)
            os.fdatasync(journal)
            data.join()
            os.close(fd)
            os.rename(temp, folder / f"f{i:05d}.dat")
            os.fsync(directory)
            os.write(journal, record)  # the outcome rides the next flush
            times.append(time.perf_counter() - started)
    finally:
        os.close(directory)
        os.close(journal)
    return statistics.median(times) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--place", choices=("auto", "loop", "thread"), default="auto")
    ap.add_argument("--tmp", default=None, help="parent folder for the data")
    args = ap.parse_args()
    if args.place == "loop":
        flushplace.INLINE_SYNC_MAX = float("inf")
    elif args.place == "thread":
        flushplace.INLINE_SYNC_MAX = 0.0
    walls, commits, cpus, loops, floors = [], [], [], [], []
    for _ in range(args.rounds):
        root = Path(tempfile.mkdtemp(prefix="conduit-commit-", dir=args.tmp))
        try:
            wall, commit, cpu, loop = asyncio.run(one(args.files, root))
            floors.append(floor(args.files, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        walls.append(wall)
        commits.append(commit)
        cpus.append(cpu)
        loops.append(loop)
    print(
        f"up {args.files} x 4 KiB, journal {args.place}: "
        f"wall {statistics.median(walls):.0f} µs/file ({' '.join(f'{w:.0f}' for w in walls)}), "
        f"commit {statistics.median(commits):.0f} µs ({' '.join(f'{c:.0f}' for c in commits)}), "
        f"process CPU {statistics.median(cpus):.0f} µs/file "
        f"({' '.join(f'{c:.0f}' for c in cpus)}), "
        f"intent appends on the loop {statistics.median(loops):.2f}/file; "
        f"the disk's floor {statistics.median(floors):.0f} µs/file "
        f"({' '.join(f'{f:.0f}' for f in floors)})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
