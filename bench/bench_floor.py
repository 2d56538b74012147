"""The SSH stack's own floor: a bare asyncssh SFTP server against sshd and Conduit.

    python bench/bench_floor.py [--files 2000] [--runs 3] [--only tree] [--size 1GiB]

How much of the gap between Conduit and sshd is Conduit's, and how much is the
stack it is built on? This runs the same OpenSSH client rows as
``bench_gateway.py`` (its ``Bench``: same data, same checks, servers
alternated in every run) against four servers on loopback:

* **OpenSSH**: sshd with internal-sftp;
* **asyncssh**: asyncssh's own ``SFTPServer`` (plus its SCP server for
  ``scp -O``), chrooted to a folder, with no policy, no journal, no hashing, no
  temp files: the least any gateway on asyncssh can do per request;
* **asyncssh+tuning**: the same with Conduit's run-time changes to asyncssh
  (``conduit._asyncssh.tuning.apply()``: AES-GCM key reuse, no ``MSG_IGNORE``,
  lean packet log and receive buffer);
* **Conduit**, like-for-like (``durable_uploads = false``, ``[audit] fsync =
  "batch"``): the whole gateway.

It prints files/s (tree) or MB/s (big) per server and each one's ratio to
sshd. The bare servers advertise no ``limits@openssh.com``, so OpenSSH's
clients use 32 KiB requests with them and 255 KiB with Conduit: compare the
tree rows; the big rows are for orientation only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_gateway as bg

CIPHER = bg.CIPHER


async def serve_bare(root: Path, authorized: Path, ready: Path, tuned: bool) -> None:
    """A bare asyncssh SFTP/SCP server on a free loopback port (the child process)."""
    import asyncssh

    if tuned:
        sys.path.insert(0, str(bg.REPO / "src"))
        from conduit._asyncssh import tuning

        tuning.apply()
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    class Files(asyncssh.SFTPServer):
        def exit(self) -> None:
            self.channel.exit(0)  # OpenSSH 9 scp (SFTP mode) exits 1 without a status

    def sftp(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        return Files(chan, chroot=os.fsencode(root))

    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=str(authorized),
        sftp_factory=sftp,
        allow_scp=True,
        encryption_algs=[CIPHER],
        compression_algs=["none"],
        line_editor=False,
    )
    port = server.sockets[0].getsockname()[1]
    public = host_key.export_public_key().decode().split()
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(f"{port} {public[0]} {public[1]}\n")
    tmp.rename(ready)
    await asyncio.Event().wait()


class Floor(bg.Bench):
    """``bench_gateway.Bench`` with the two bare asyncssh servers added."""

    def start_bare(self, name: str, tuned: bool) -> bg.Server:
        folder = self.tmp / name
        served = folder / "files"
        served.mkdir(parents=True)
        authorized = folder / "authorized_keys"
        authorized.write_text(self.key.with_suffix(".pub").read_text())
        ready = folder / "ready"
        argv = [sys.executable, __file__, "--serve-bare", str(served), str(authorized)]
        argv += [str(ready)] + (["--tuned"] if tuned else [])
        log = (folder / "server.log").open("wb")
        proc = subprocess.Popen(self.pinned(argv, server=True), stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start:\n" + (folder / "server.log").read_text())
            time.sleep(0.05)
        port, algorithm, key = ready.read_text().split()
        with self.known_hosts.open("a") as f:
            f.write(f"[127.0.0.1]:{port} {algorithm} {key}\n")
        print(f"{name} on port {port} (pid {proc.pid})", flush=True)
        return bg.Server(name, int(port), "", served, proc)

    def setup(self) -> None:
        super().setup()
        for name, tuned in (("asyncssh", False), ("asyncssh+tuning", True)):
            server = self.start_bare(name, tuned)
            self.servers[name] = server  # stopped by stop() from here on
            os.link(self.local / "big.bin", server.disk / "big.bin")
            shutil.copytree(self.local / "tree", server.disk / "tree")
        self.servers["Conduit"] = self.servers.pop("Conduit")  # last column
        os.sync()

    def line(self, result: bg.Result) -> str:
        row = result.row
        sshd = self.rate(row, statistics.median(result.times["OpenSSH"]))
        cells = [f"{sshd:.0f}"]
        for name in list(self.servers)[1:]:
            rate = self.rate(row, statistics.median(result.times[name]))
            cells.append(f"{rate:.0f} ({rate / sshd:.2f})")
        unit = "MB/s" if row.what == "big" else "files/s"
        return f"| {row.label} | {unit} | " + " | ".join(cells) + " |"

    def table(self, results: list[bg.Result]) -> str:
        a = self.args
        head = [
            f"The stack's floor: {a.files} x 4 KiB files, {a.size / bg.MIB:.0f} MiB file, "
            f"median of {a.runs}, {CIPHER}, loopback, Conduit like-for-like, load "
            f"{os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}",
            "",
            "| row | unit | " + " | ".join(self.servers) + " |",
            "|---|---|" + "---:|" * len(self.servers),
        ]
        return "\n".join(head + [self.line(r) for r in results]) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=bg.parse_size, default=bg.GIB)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", action="append", default=[], metavar="WORD")
    p.add_argument("--pin", action="store_true", help="bench_gateway's --pin")
    p.add_argument("--serve-bare", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve_bare:
        root, authorized, ready = (Path(x) for x in a.serve_bare)
        asyncio.run(serve_bare(root, authorized, ready, a.tuned))
        return 0
    args = argparse.Namespace(
        size=a.size,
        files=a.files,
        runs=a.runs,
        quick=False,
        only=a.only,
        sftp_server="internal",
        profile=None,
        audit_cost=False,
        no_fsync=True,
        respawn=False,
        pin=a.pin,
        each=False,
        serve_without_audit=False,
        config=None,
        tmp=None,
        keep=False,
    )
    bench = Floor(args)
    try:
        bench.setup()
        print(f"load {os.getloadavg()[0]:.2f}", flush=True)
        results = bench.run()
    finally:
        bench.stop()
    print("\n" + bench.table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
