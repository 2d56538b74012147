"""src/conduit/_asyncssh/patches: the upstream diffs apply, compile and work.

Each diff is applied in order with ``git apply`` to a copy of the installed
asyncssh (the pinned 2.24.1); every patched file must compile, and the patched
copy, imported in a child process ahead of the installed one, must carry an
SFTP upload and download byte for byte, with rekeys in the middle of each
transfer: under AES-GCM, where the diffs change the most (no ignore packets, a
memoryview receive buffer); under chacha20-poly1305, the other AEAD cipher (no
ignore packets, a memoryview receive buffer too, one keystream per packet);
and under AES-CTR with an encrypt-then-MAC MAC, where nothing may change on
the wire (ignore packets kept, bytes).
"""

from __future__ import annotations

import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

import conduit

PATCHES = Path(conduit.__file__).parent / "_asyncssh" / "patches"
DIFFS = sorted(PATCHES.glob("*.diff"))
PATCHED_FILE = re.compile(r"^\+\+\+ b/(\S+)", re.MULTILINE)


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture(scope="module")
def patched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine copy of the installed asyncssh with every diff applied in order."""
    assert asyncssh.__version__ == "2.24.1"
    assert shutil.which("git"), "git applies the diffs, as a maintainer would"
    root = tmp_path_factory.mktemp("asyncssh-checkout")
    shutil.copytree(
        Path(asyncssh.__file__).parent,
        root / "asyncssh",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # Its own repository, so that git apply works on this tree and no other.
    assert _git(root, "init", "-q").returncode == 0
    for diff in DIFFS:
        check = _git(root, "apply", "--check", str(diff))
        assert check.returncode == 0, f"{diff.name} does not apply: {check.stderr}"
        applied = _git(root, "apply", str(diff))
        assert applied.returncode == 0, f"{diff.name}: {applied.stderr}"
    return root


def test_the_series_is_complete() -> None:
    names = [d.name for d in DIFFS]
    assert len(names) == 15
    assert [n[:3] for n in names] == [f"{i:02d}-" for i in range(1, 16)]
    readme = (PATCHES / "README.md").read_text()
    for name in names:
        assert name in readme, f"{name} is not listed in README.md"


@pytest.mark.parametrize("diff", DIFFS, ids=lambda d: d.stem)
def test_diff_is_upstream_ready(diff: Path) -> None:
    text = diff.read_text()
    header, sep, body = text.partition("\n--- a/")
    assert sep, f"{diff.name} has no diff"
    # The header explains the change; patch and git apply skip it.
    assert "Why it is safe" in header and "Measured" in header
    for line in header.splitlines():
        assert not line.startswith(("---", "+++", "@@", "diff ")), line
    # Upstream's paths and names, nothing of ours.
    files = PATCHED_FILE.findall(text)
    assert files and all(f.startswith("asyncssh/") for f in files)
    assert re.search(r"conduit|tuning", text, re.IGNORECASE) is None
    added = [line[1:] for line in body.splitlines() if line.startswith("+") and line[1:2] != "+"]
    assert added and all(len(line) <= 79 for line in added), "upstream keeps lines <= 79"
    # Upstream's own names (Byte, String, UInt32), not module aliases like ours.
    alias = re.compile(r"(?<![\w.])_(packet|channel|connection|encryption|sftp|cipher)\.")
    assert not any(alias.search(line) for line in added)


def test_every_patched_file_compiles(patched: Path) -> None:
    files = {f for diff in DIFFS for f in PATCHED_FILE.findall(diff.read_text())}
    assert "asyncssh/connection.py" in files
    for rel in sorted(files):
        py_compile.compile(str(patched / rel), doraise=True)


def test_patches_are_in_the_copy(patched: Path) -> None:
    connection = (patched / "asyncssh" / "connection.py").read_text()
    assert "self._send_encryption.needs_mac()" in connection
    assert "def _get_padding(" in connection
    assert "accepts_memoryview()" in connection
    assert "def _recv_channel_packet(" in connection
    assert "isinstance(enc, (GCMEncryption, ChachaEncryption))" in connection
    encryption = (patched / "asyncssh" / "encryption.py").read_text()
    assert "def peek_length(" in encryption
    chacha = (patched / "asyncssh" / "crypto" / "chacha.py").read_text()
    assert "def _body_cipher(" in chacha
    # ... and the installed package is untouched.
    installed = (Path(asyncssh.__file__).parent / "connection.py").read_text()
    assert "accepts_memoryview" not in installed


# Runs in a child: the patched asyncssh first on sys.path, a server and a client
# in one event loop over loopback, an SFTP upload and download per cipher suite.
ROUND_TRIP = r"""
import asyncio, os, sys
sys.path.insert(0, sys.argv[1])
import asyncssh
from asyncssh.constants import MSG_IGNORE, MSG_KEXINIT
from asyncssh.encryption import GCMEncryption

assert asyncssh.__file__.startswith(sys.argv[1]), asyncssh.__file__
work = sys.argv[2]
SUITES = {
    "gcm": (["aes256-gcm@openssh.com"], ["hmac-sha2-256-etm@openssh.com"]),
    "ctr": (["aes256-ctr"], ["hmac-sha2-256-etm@openssh.com"]),
    "chacha": (["chacha20-poly1305@openssh.com"], ["hmac-sha2-256-etm@openssh.com"]),
}

class Server(asyncssh.SSHServer):
    def begin_auth(self, username):
        return False  # no authentication: only the transport is under test

async def run(name, enc, mac):
    # Watch, without changing them: packet types sent, buffer types parsed.
    conn_cls = asyncssh.connection.SSHConnection
    sent_types, buffers, lane = [], set(), [0]
    orig_send, orig_recv = conn_cls.send_packet, conn_cls._recv_data
    orig_lane = conn_cls._recv_channel_packet
    def counting(self, pkttype, *args, **kw):
        sent_types.append(pkttype)
        return orig_send(self, pkttype, *args, **kw)
    def watching(self):
        buffers.add(type(self._inpbuf).__name__)
        return orig_recv(self)
    def laned(self):
        result = orig_lane(self)
        lane[0] += bool(result)
        return result
    conn_cls.send_packet, conn_cls._recv_data = counting, watching
    conn_cls._recv_channel_packet = laned
    key = asyncssh.generate_private_key("ssh-ed25519")
    opts = dict(encryption_algs=enc, mac_algs=mac, rekey_bytes=96 * 1024)
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], server_factory=Server,
        sftp_factory=True, line_editor=False, **opts)
    port = server.sockets[0].getsockname()[1]
    data = os.urandom(384 * 1024 + 123)
    src, dst, back = (os.path.join(work, name + n) for n in (".src", ".dst", ".back"))
    with open(src, "wb") as f:
        f.write(data)
    try:
        async with asyncssh.connect(
                "127.0.0.1", port, username="u", known_hosts=None, client_keys=None,
                preferred_auth="none", **opts) as conn:
            gcm = isinstance(conn._send_encryption, GCMEncryption)
            assert gcm == (name == "gcm"), type(conn._send_encryption)
            async with conn.start_sftp_client() as sftp:
                await sftp.put(src, dst)
                await sftp.get(dst, back)
    finally:
        server.close()
        await server.wait_closed()
        conn_cls.send_packet, conn_cls._recv_data = orig_send, orig_recv
        conn_cls._recv_channel_packet = orig_lane
    for path in (dst, back):
        with open(path, "rb") as f:
            assert f.read() == data, (name, path)
    ignores = sent_types.count(MSG_IGNORE)
    assert sent_types.count(MSG_KEXINIT) > 4, "rekeys mid-transfer, both sides"
    print(name, "ok", len(data), "ignores", ignores, "buffers", sorted(buffers),
          "lane", lane[0], flush=True)
    # The receive lane takes the data packets under GCM (11) and ChaCha20 (15),
    # none otherwise.
    assert (lane[0] > 20) if name != "ctr" else (lane[0] == 0), (name, lane)
    return ignores, buffers

async def main():
    ignores, buffers = await run("gcm", *SUITES["gcm"])
    assert ignores == 0 and "memoryview" in buffers, (ignores, buffers)
    ignores, buffers = await run("ctr", *SUITES["ctr"])
    assert ignores > 10 and buffers == {"bytes"}, (ignores, buffers)
    ignores, buffers = await run("chacha", *SUITES["chacha"])
    assert ignores == 0 and "memoryview" in buffers, (ignores, buffers)

asyncio.run(main())
"""


def test_patched_asyncssh_carries_sftp_both_ways(patched: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", ROUND_TRIP, str(patched), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert lines[0].startswith("gcm ok 393339 ignores 0"), proc.stdout
    assert lines[1].startswith("ctr ok 393339 ignores "), proc.stdout
    assert lines[2].startswith("chacha ok 393339 ignores 0 "), proc.stdout
