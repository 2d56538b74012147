"""``conduit sync`` (through a Conduit gateway) vs ``rsync`` over ssh: bytes on the wire.

A file of ``--size`` (default 256 MiB) is on the far side; the local copy has
``--change`` (default 1 %) of it overwritten in ``--piece``-byte spots at
random offsets. Each tool brings the far file up to date over loopback,
through a TCP proxy that counts every byte both ways (SSH's own overhead,
handshake and authentication included):

* Conduit: ``conduit sync`` (a subprocess) to a ``conduit serve`` gateway: far
  block hashes by the gateway's ``check-file-handle``, unchanged runs by its
  ``copy-data``, changed blocks written;
* rsync: ``rsync -e ssh`` to a loopback OpenSSH sshd (rsync on both ends, its
  rolling-checksum delta; ``--ignore-times`` so it never skips the file on its
  size-and-time check; no ``-z`` for either tool), same cipher.

Printed: bytes each way, the ratio Conduit / rsync (the issue's target is
<= 1.5) and wall times (informative only: the gateway also hashes the far file
and this machine is shared). Needs ``rsync`` (Debian package ``rsync``).

    python bench/bench_sync.py                 # 256 MiB, 1 % in 4 KiB spots
    python bench/bench_sync.py --size 32M --piece 1000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.storage.relay.sshd import keygen, start_sshd  # noqa: E402

CIPHER = "aes128-gcm@openssh.com"


class Proxy:
    """A loopback TCP proxy to ``target`` that counts bytes in each direction."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: int) -> None:
        self.loop, self.target = loop, target
        self.up = self.down = 0
        self.port = asyncio.run_coroutine_threadsafe(self._start(), loop).result(10)

    async def _start(self) -> int:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        far_reader, far_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            while data := await src.read(1 << 16):
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(reader, far_writer, True), pipe(far_reader, writer, False),
            return_exceptions=True,
        )  # fmt: skip

    def reset(self) -> None:
        self.up = self.down = 0


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", text.upper())
    if not m:
        raise SystemExit(f"bad size {text!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def scatter(data: bytearray, fraction: float, piece: int, seed: int = 15) -> int:
    rng = random.Random(seed)
    spots = max(1, int(len(data) * fraction / piece))
    for _ in range(spots):
        at = rng.randrange(0, len(data) - piece)
        data[at : at + piece] = rng.randbytes(piece)
    return spots


def start_gateway(folder: Path, key: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    served = folder / "areas" / "bench"
    served.mkdir(parents=True)
    pub = key.with_suffix(".pub").read_text().strip()
    config = folder / "conduit.toml"
    config.write_text(
        f'[gateway]\nlisten = "127.0.0.1:0"\ndata_dir = "{folder}/data"\n'
        "[gateway.limits]\nidle_timeout = 0\n"
        '[zones.local]\nlevel = 3\nnetworks = ["127.0.0.0/8"]\n'
        f'[areas.bench]\nzone = "local"\npath = "{served}"\n'
        '[roles.engineer]\ngrants = [{ target = "bench", ops = ["list", "read", "write", '
        '"mkdir", "rename", "delete"] }]\n'
        f'[users.ops]\nkeys = ["{pub}"]\nroles = ["engineer"]\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    log = folder / "conduit.log"
    argv = [sys.executable, "-m", "conduit", "serve", "--config", str(config)]
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("conduit exited:\n" + log.read_text())
        m = re.search(r"listening on [^\s]+:(\d+)", log.read_text())
        if m:
            host = (folder / "data" / "host_ed25519.pub").read_text().split()
            return proc, int(m.group(1)), f"{host[0]} {host[1]}"
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("conduit did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M")
    parser.add_argument("--change", type=float, default=0.01, help="fraction changed")
    parser.add_argument("--piece", type=parse_size, default=4096, help="bytes per changed spot")
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is not installed (apt-get install rsync)")
    size = parse_size(args.size)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    key = tmp / "ops_ed25519"
    pub = keygen(key, "ops")
    sshd = start_sshd(tmp / "sshd", client_keys=[pub], sftp=True)
    gateway, gw_port, gw_key = start_gateway(tmp / "gw", key)
    try:
        original = bytearray(os.urandom(size))
        far_gw = tmp / "gw" / "areas" / "bench" / "image.bin"
        far_rsync = tmp / "rsync-far" / "image.bin"
        far_rsync.parent.mkdir()
        far_gw.write_bytes(original)
        far_rsync.write_bytes(original)
        spots = scatter(original, args.change, args.piece)
        local = tmp / "image.bin"
        local.write_bytes(original)
        wanted = hashlib.sha256(original).hexdigest()
        del original
        print(f"{size} bytes, {spots} spots of {args.piece} bytes changed", flush=True)

        known = tmp / "known_hosts"
        known.write_text(f"[127.0.0.1]:{gw_port} {gw_key}\n")
        proxy_gw = Proxy(loop, gw_port)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "conduit", "sync", "-P", str(proxy_gw.port), "-i", str(key),
             "-F", "/dev/null", "--host-key", gw_key, str(local),
             "ops@127.0.0.1:/bench/image.bin"],
            capture_output=True, text=True, env=env, timeout=1800,
        )  # fmt: skip
        conduit_s = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"conduit sync failed: {done.stderr}")
        print("conduit:", done.stdout.strip(), flush=True)

        proxy_sshd = Proxy(loop, sshd.port)
        (tmp / "known_sshd").write_text(f"[127.0.0.1]:{proxy_sshd.port} {sshd.host_key}\n")
        ssh = (
            f"ssh -p {proxy_sshd.port} -i {key} -c {CIPHER} -o IdentitiesOnly=yes "
            f"-o BatchMode=yes -o UserKnownHostsFile={tmp / 'known_sshd'} -o LogLevel=ERROR"
        )
        started = time.perf_counter()
        subprocess.run(
            ["rsync", "-e", ssh, "--no-whole-file", "--ignore-times", str(local),
             f"root@127.0.0.1:{far_rsync}"],
            check=True, timeout=1800,
        )  # fmt: skip
        rsync_s = time.perf_counter() - started
        for far in (far_gw, far_rsync):
            assert hashlib.sha256(far.read_bytes()).hexdigest() == wanted, far
        c_total = proxy_gw.up + proxy_gw.down
        r_total = proxy_sshd.up + proxy_sshd.down
        print(f"{'':10}{'up':>14}{'down':>14}{'total':>14}{'seconds':>10}")
        print(f"{'conduit':10}{proxy_gw.up:>14,}{proxy_gw.down:>14,}{c_total:>14,}"
              f"{conduit_s:>10.1f}")  # fmt: skip
        print(f"{'rsync':10}{proxy_sshd.up:>14,}{proxy_sshd.down:>14,}{r_total:>14,}"
              f"{rsync_s:>10.1f}")  # fmt: skip
        print(f"bytes on the wire, conduit / rsync: {c_total / r_total:.2f} (target <= 1.5)")
    finally:
        gateway.terminate()
        gateway.wait(10)
        sshd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
