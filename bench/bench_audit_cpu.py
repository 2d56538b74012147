"""Auditing's CPU per file, in one process: the gateway's own audit path, nothing else.

    python bench/bench_audit_cpu.py [--files 5000] [--kind down|up] [--fsync batch]
                                    [--flush auto|thread|loop]

Records what the gateway records for one sequential client's small files,
through the same objects (``Operations.record`` -> ``EventLog`` -> ``Auditor`` ->
journal), with a TCP syslog sink (RFC 5424) draining into a local listener and
the search index, and prints the process's CPU time per file: "inline" while
the records are written, "all in" once the sink has sent them and the index
has caught up (the index waits for a quiet journal). A download is two records
(``started``, durable, then ``success``), an upload three (``started``, the
durable commit ``intent``, ``success``). It also runs the same loop through a
recorder that drops every event, as ``bench_gateway.py --audit-cost`` does for
"auditing off", and prints the difference: auditing's own CPU per file (the
issue's target), without the loop's own (ids, dicts, ``Operations.record``'s
call). ``--flush`` forces where a durable
record's write + fdatasync runs with ``--fsync always``: ``thread`` as on a
disk whose flushes take over ``INLINE_SYNC_MAX`` (the journal's flusher
thread), ``loop`` as on a fast one; ``auto`` (default) lets the measured flush
cost decide, as the gateway does, so a run on a shared disk may land in either.

``bench_gateway.py --audit-cost`` measures the same thing over SSH as the
difference between two gateways; on a shared machine its noise (the server
CPU of one gateway moves by ~0.3 s per 1,000-file tree) is larger than what it
measures, and this one is steadier. Run before/after alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from conduit.audit import Auditor, flushplace
from conduit.audit.events import EventOutcome, EventType
from conduit.config.model import AuditConfig, SiemSink
from conduit.gateway.context import SessionInfo
from conduit.gateway.eventlog import EventLog
from conduit.gateway.operations import Operations

#: The SIEM: a child process that reads and drops everything (in this process,
#: its threads' CPU for reading the stream was counted as the gateway's).
_DRAIN = """
import socket, sys, threading
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
def drain(conn):
    with conn:
        while conn.recv(1 << 16):
            pass
while True:
    conn, _ = server.accept()
    threading.Thread(target=drain, args=(conn,), daemon=True).start()
"""


def siem() -> tuple[int, subprocess.Popen[bytes]]:
    """A TCP listener in a child process that reads and drops everything; its port."""
    child = subprocess.Popen([sys.executable, "-c", _DRAIN], stdout=subprocess.PIPE)
    assert child.stdout is not None
    return int(child.stdout.readline()), child


#: Where durable flushes ran at the end of each run (fsync "always": loop or thread).
LANDED: list[str] = []


class Drop:
    """The recorder of a gateway without auditing (``bench_gateway.py --audit-cost``
    runs the same): every event dropped, so what is left is the loop's own work."""

    available = True

    async def record(self, type: str, outcome: str, **fields: object) -> None:
        return None


async def run(files: int, kind: str, fsync: str, audit: bool = True) -> tuple[float, float]:
    folder = Path(tempfile.mkdtemp(prefix="conduit-audit-cpu-"))
    session = SessionInfo("0123456789abcdef", "bench", IPv4Address("127.0.0.1"), "local", "sftp")
    if not audit:
        ops = Operations(SimpleNamespace(recorder=Drop()), session)  # type: ignore[arg-type]
        spent = await files_through(ops, files, kind)
        shutil.rmtree(folder)
        return spent, spent
    port, listener = siem()
    config = AuditConfig(
        journal=folder / "audit",
        fsync=fsync,  # type: ignore[arg-type]
        siem=[SiemSink(target=f"tcp://127.0.0.1:{port}")],
    )
    auditor = await Auditor.open(config, "bench", folder / "keys")
    ops = Operations(SimpleNamespace(recorder=EventLog(auditor)), session)  # type: ignore[arg-type]
    await asyncio.sleep(3)  # start-up work (first checkpoint, sink connect) is no file's
    t0 = time.process_time()
    inline = await files_through(ops, files, kind)
    LANDED.append("thread" if auditor._place.in_thread else "loop")
    await asyncio.sleep(3.5)  # the sink sends, the index catches up after a quiet second
    all_in = (time.process_time() - t0) / files * 1e6
    await auditor.close()
    listener.kill()
    listener.wait()
    shutil.rmtree(folder)
    return inline, all_in


async def files_through(ops: Operations, files: int, kind: str) -> float:
    """Record what ``files`` small downloads or uploads record; CPU µs per file."""
    t0 = time.process_time()
    for i in range(files):
        transfer, path = uuid.uuid4().hex[:16], f"/bench/tree/d{i % 20:02d}/f{i:05d}.dat"
        done = dict(bytes=4096, sha256="ab" * 32, duration=0.000123, error=None, note=None)
        common = dict(transfer=transfer, path=path, rule="engineer#1", area="bench")
        if kind == "down":
            await ops.record(EventType.FILE_DOWNLOAD, EventOutcome.STARTED, **common)
            await ops.settled(EventType.FILE_DOWNLOAD, "success", **common, **done)
        else:
            await ops.record(
                EventType.FILE_UPLOAD, EventOutcome.STARTED, durable=False, temp=".part", **common
            )
            await ops.record(
                EventType.FILE_UPLOAD, EventOutcome.INTENT, sha256="ab" * 32, bytes=4096, **common
            )
            await ops.settled(EventType.FILE_UPLOAD, "success", **common, **done)
    return (time.process_time() - t0) / files * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--kind", choices=("down", "up"), action="append")
    ap.add_argument("--fsync", choices=("always", "batch", "never"), default="batch")
    ap.add_argument("--flush", choices=("auto", "thread", "loop"), default="auto")
    args = ap.parse_args()
    if args.flush != "auto":  # the threshold the auditor compares its flush cost with
        flushplace.INLINE_SYNC_MAX = 0.0 if args.flush == "thread" else float("inf")
    for kind in args.kind or ["down", "up"]:
        off, _ = asyncio.run(run(args.files, kind, args.fsync, audit=False))
        inline, all_in = asyncio.run(run(args.files, kind, args.fsync))
        print(
            f"{kind:4} fsync={args.fsync} flush={args.flush}"
            f"{f' (landed: {LANDED[-1]})' if args.fsync == 'always' else ''}: "
            f"inline {inline:.0f} µs/file, "
            f"all in (sink + index) {all_in:.0f} µs/file; without auditing {off:.0f} µs/file, "
            f"so auditing's own: inline {inline - off:.0f}, all in {all_in - off:.0f} µs/file",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
