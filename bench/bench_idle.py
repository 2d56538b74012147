"""Hundreds of idle authenticated SFTP sessions held open: Conduit against OpenSSH sshd.

A gateway in front of a fleet holds many sessions that do nothing most of the
time (a client left connected, a tool polling every few minutes). This bench
opens ``--sessions`` (500) SSH connections, each authenticated with a key and
with the SFTP subsystem started (the SFTP version handshake done), against
Conduit and against an sshd of its own, holds them, then asks every session
for ``realpath(".")`` to check that each is still held and answers. It prints
the server's memory with no session, with all of them and after they closed:
RSS and PSS summed over the server's process and all its children (from
/proc/PID/smaps_rollup; sshd forks two processes per connection, PSS counts
their shared pages once), and the cost per session.

The clients are asyncssh connections from this one process (``--concurrency``
logins in flight at a time), not OpenSSH ``sftp`` processes: 500 of those
would cost the client side more memory and CPU than the servers under test on
a small machine. Both servers see the same client.

Conduit's limits that 500 sessions of one user meet, and what this bench sets
(in [gateway.limits]): ``max_sessions_per_user`` (default 64) is raised to the
session count; ``max_startups_per_source`` (default 10, all clients here come
from 127.0.0.1) to ``--concurrency``; ``max_startups`` is 50 as in
bench_gateway. The gateway raises its own RLIMIT_NOFILE soft limit to the hard
limit (one descriptor per connection, plus ``fd_reserve`` = 64 kept free);
this process raises its own likewise.

Usage::

    python bench/bench_idle.py                    # 500 sessions, both servers
    python bench/bench_idle.py --sessions 1000 --server conduit
    python bench/bench_idle.py --server conduit --workers 2   # [gateway] workers = 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncssh  # noqa: E402

from bench.bench_concurrent import family  # noqa: E402
from bench.bench_gateway import CIPHER, MIB, Bench, Server  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def memory(pid: int) -> tuple[int, int, int]:
    """RSS and PSS in bytes summed over ``pid``'s family, and how many processes."""
    rss = pss = count = 0
    for p in family(pid):
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        count += 1
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key == "Rss":
                rss += int(rest.split()[0]) * 1024
            elif key == "Pss":
                pss += int(rest.split()[0]) * 1024
    return rss, pss, count


def own_rss() -> int:
    """This (client) process's RSS in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Idle:
    def __init__(self, bench: Bench, server: Server, args: argparse.Namespace) -> None:
        self.bench, self.server, self.args = bench, server, args
        self.held: list[tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]] = []
        self.failed: list[str] = []

    async def open_one(self, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                conn = await asyncssh.connect(
                    "127.0.0.1",
                    self.server.port,
                    username=self.bench.user(self.server),
                    client_keys=[str(self.bench.key)],
                    known_hosts=str(self.bench.known_hosts),
                    encryption_algs=[CIPHER],
                    agent_path=None,
                    config=None,
                )
                sftp = await conn.start_sftp_client()
            except (OSError, asyncssh.Error) as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")
                return
            self.held.append((conn, sftp))

    async def check(self) -> int:
        """How many held sessions answer ``realpath(".")`` now."""

        async def one(sftp: asyncssh.SFTPClient) -> bool:
            try:
                await asyncio.wait_for(sftp.realpath("."), 30)
                return True
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                self.failed.append(f"check: {type(exc).__name__}: {exc}")
                return False

        return sum(await asyncio.gather(*(one(sftp) for _, sftp in self.held)))

    async def run(self) -> dict[str, Any]:
        assert self.server.proc is not None
        pid = self.server.proc.pid
        Bench.settle(self.server.proc)
        base = memory(pid)
        client_base = own_rss()
        gate = asyncio.Semaphore(self.args.concurrency)
        started = time.perf_counter()
        await asyncio.gather(*(self.open_one(gate) for _ in range(self.args.sessions)))
        opened = time.perf_counter() - started
        await asyncio.sleep(self.args.hold)
        loaded = memory(pid)
        answering = await self.check()
        client = own_rss() - client_base
        for conn, _ in self.held:
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn, _ in self.held))
        self.held.clear()
        await asyncio.sleep(2)
        after = memory(pid)
        return {
            "opened": self.args.sessions - sum(not f.startswith("check") for f in self.failed),
            "answering": answering,
            "seconds": opened,
            "base": base,
            "loaded": loaded,
            "after": after,
            "client": client,
            "failed": self.failed[:3],
        }


def line(name: str, r: dict[str, Any], sessions: int) -> str:
    base_rss, base_pss, _ = r["base"]
    rss, pss, procs = r["loaded"]
    after_rss = r["after"][0]
    return (
        f"| {name} | {r['opened']}/{sessions} | {r['answering']} | {r['seconds']:.1f} "
        f"| {base_rss / MIB:.0f} | {rss / MIB:.0f} | {pss / MIB:.0f} | {procs} "
        f"| {(rss - base_rss) / max(1, r['answering']) / 1024:.0f} "
        f"| {(pss - base_pss) / max(1, r['answering']) / 1024:.0f} "
        f"| {after_rss / MIB:.0f} | {r['client'] / MIB:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sessions", type=int, default=500, help="idle sessions (default 500)")
    p.add_argument("--concurrency", type=int, default=16, help="logins in flight (default 16)")
    p.add_argument("--hold", type=float, default=3.0, help="seconds to hold them idle (3)")
    p.add_argument("--server", choices=("both", "conduit", "sshd"), default="both")
    p.add_argument(
        "--default-limits",
        action="store_true",
        help="leave max_sessions_per_user and max_startups_per_source at their defaults "
        "(to see which refuses first)",
    )
    p.add_argument("--workers", type=int, help="write [gateway] workers = N into Conduit's config")
    p.add_argument("--tmp", help="parent folder for the data (default: /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the data folder")
    args = p.parse_args(argv)
    # What bench_gateway's servers read.
    args.audit_cost = args.respawn = args.pin = args.no_fsync = False
    args.profile, args.sftp_server = None, "internal"
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bench = Bench(args)
    if args.workers is not None:
        bench.gateway_toml = f"workers = {args.workers}\n"
    if not args.default_limits:
        bench.limits_toml = (
            f"max_sessions_per_user = {args.sessions}\n"
            f"max_startups_per_source = {max(10, args.concurrency)}\n"
        )
    results: dict[str, dict[str, Any]] = {}
    try:
        bench.local.mkdir()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(bench.key)], check=True
        )
        if args.server in ("both", "sshd"):
            bench.servers["OpenSSH"] = bench.start_sshd()
        if args.server in ("both", "conduit"):
            bench.servers["Conduit"] = bench.start_conduit()
        for name, server in bench.servers.items():
            print(f"{name}: opening {args.sessions} SFTP sessions", flush=True)
            results[name] = asyncio.run(Idle(bench, server, args).run())
            print(line(name, results[name], args.sessions), flush=True)
            if results[name]["failed"]:
                print(f"  first failures: {results[name]['failed']}", flush=True)
    finally:
        bench.stop()
    load = os.getloadavg()
    table = "\n".join(
        [
            f"{args.sessions} idle authenticated SFTP sessions (asyncssh clients from one "
            f"process, {args.concurrency} logins in flight), held {args.hold:.0f} s, "
            f"{'default limits' if args.default_limits else 'max_sessions_per_user raised'}"
            f"{f', workers = {args.workers}' if args.workers is not None else ''}; "
            "memory "
            f"summed over the server's processes; load {load[0]:.2f} {load[1]:.2f} "
            f"{load[2]:.2f} at the end, {time.strftime('%Y-%m-%d %H:%M')}",
            "",
            "| server | opened | answering | s to open | RSS MiB idle | RSS MiB held "
            "| PSS MiB held | processes | RSS KiB/session | PSS KiB/session "
            "| RSS MiB after close | client MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(line(name, r, args.sessions) for name, r in results.items()),
        ]
    )
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"idle-{args.sessions}.md"
    out.write_text(table + "\n")
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
