"""The gateway's own CPU per small file, in one process, without SSH or the journal.

    python bench/bench_smallfile.py [--files 2000] [--rounds 3] [--kind down|up] [--listed]

Runs what a session does for each file of a 4 KiB tree through the real
objects: :class:`~conduit.gateway.operations.Operations` with a compiled
policy and a :class:`~conduit.storage.local.LocalBackend`, then the transfer
pipeline (read-ahead, write-behind), in the order an OpenSSH SFTP client asks
(download: open, read, read to the end, close; upload: open, write, close).
``--listed``: a download first lists the tree's folder, as ``sftp get -r`` and
``scp -r`` do (the listing's cost is spread over its files).
Records go to a recorder that keeps nothing: the journal has its own bench
(``bench_audit_cpu.py``) and the SSH packet path is asyncssh's. What is left is
the per-file cost of the policy, storage, pipeline and worker threads, printed
as process CPU and event-loop CPU per file.

Over SSH (``bench_gateway.py --only tree``) one file's server CPU moves by a
third between runs on a shared machine; this one moves by a few per cent.
Run before/after alternately (a detached worktree of the old code).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from conduit.config import parse
from conduit.gateway.context import SessionInfo
from conduit.gateway.operations import Operations
from conduit.gateway.vfs import resolve
from conduit.policy import Policy
from conduit.storage.local import LocalBackend

SITE = """
[gateway]
data_dir = "{root}/data"

[zones.ops]
level = 3
networks = ["127.0.0.0/8"]

[areas.bench]
zone = "ops"
path = "{root}/bench"

[roles.engineer]
grants = [{{ target = "bench", ops = ["list", "read", "write", "mkdir", "rename", "delete"] }}]

[users.alice]
keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]
roles = ["engineer"]
"""

SIZE = 4096
READ = 32768  # what OpenSSH's sftp asks for first


class NullRecorder:
    async def record(self, type: str, outcome: str, **fields: Any) -> None:
        return None


@dataclass
class Site:
    policy: Policy
    areas: dict[str, LocalBackend]
    recorder: Any = field(default_factory=NullRecorder)
    devices: dict[str, LocalBackend] = field(default_factory=dict)


def thread_cpu() -> float:
    return time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID)


async def downloads(ops: Operations, names: list[str], listed: bool = False) -> None:
    if listed:
        assert len(await ops.listdir(resolve(names[0]).parent)) >= len(names)
    for name in names:
        download = await ops.open_read(resolve(name))
        data = await download.read(0, READ)
        assert len(data) == SIZE
        assert await download.read(SIZE, READ) == b""
        await download.close()


async def uploads(ops: Operations, names: list[str], listed: bool = False) -> None:
    payload = os.urandom(SIZE)
    for name in names:
        upload = await ops.open_write(resolve(name))
        await upload.write(0, payload)
        await upload.commit()


async def one(kind: str, files: int, root: Path, listed: bool = False) -> tuple[float, float]:
    config = parse(SITE.format(root=root), source=root / "conduit.toml")
    areas = {name: LocalBackend(name, a.path, durable=False) for name, a in config.areas.items()}
    site = Site(Policy(config), areas)
    session = SessionInfo("0123456789abcdef", "alice", ip_address("127.0.0.1"), "ops", "sftp")
    ops = Operations(site, session)
    tree = root / "bench" / "tree"
    tree.mkdir(parents=True, exist_ok=True)
    names = [f"/bench/tree/f{i:05d}.dat" for i in range(files)]
    if kind == "down":
        for i in range(files):
            (tree / f"f{i:05d}.dat").write_bytes(os.urandom(SIZE))
    work = downloads if kind == "down" else uploads
    await work(ops, names[: min(200, files)])  # warm: first imports, the pool's threads
    p0, t0 = time.process_time(), thread_cpu()
    await work(ops, names, listed)
    p1, t1 = time.process_time(), thread_cpu()
    return (p1 - p0) / files * 1e6, (t1 - t0) / files * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kind", choices=("down", "up"), action="append")
    ap.add_argument("--listed", action="store_true", help="list the folder before downloading")
    args = ap.parse_args()
    for kind in args.kind or ["down", "up"]:
        procs, loops = [], []
        label = "down listed" if kind == "down" and args.listed else kind
        for _ in range(args.rounds):
            root = Path(tempfile.mkdtemp(prefix="conduit-smallfile-"))
            try:
                proc, loop = asyncio.run(one(kind, args.files, root, args.listed))
            finally:
                shutil.rmtree(root, ignore_errors=True)
            procs.append(proc)
            loops.append(loop)
        print(
            f"{label:4} {args.files} x 4 KiB: process {statistics.median(procs):.0f} µs/file "
            f"({' '.join(f'{p:.0f}' for p in procs)}), event loop "
            f"{statistics.median(loops):.0f} µs/file ({' '.join(f'{p:.0f}' for p in loops)})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
