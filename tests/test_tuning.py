"""conduit.gateway.tuning: fails when an asyncssh upgrade makes a change stale.

Each function tuning replaces is pinned by a hash of its source: if asyncssh
changes one, the copy or wrapper in tuning.py must be reviewed against the new
code (and the hash updated). Then each change is checked to be in effect and
to keep the wire format: what a tuned side sends, an untouched peer reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import subprocess
import sys
from collections.abc import Iterator

import asyncssh
import pytest
from asyncssh.constants import MSG_IGNORE, MSG_KEX_LAST
from asyncssh.crypto.cipher import GCMCipher

from conduit.gateway import tuning

# sha256 of inspect.getsource() of each original, asyncssh 2.24.1.
SOURCE_SHA256 = {
    "SSHConnection.send_packet": "fb9da7bec6dd395a2f379f8a0f4dbfc5f194ff80e1ed8630d9a6dbf291359406",
    "SSHConnection.data_received": "b2d14a83b2604db65c8775264dfbe38e5920ba749ec627134ddbe708cb43974a",  # noqa: E501
    "SSHConnection._recv_pkthdr": "7adc4d88fe20593cef39c00322547733a2d81f0aed40924e6105d5f57aa2a820",  # noqa: E501
    "SSHPacketLogger._log_packet": "f3263d7da93663f1a3825d53a0ef71122da1168957e28d0b84dc20a3bba0c45c",  # noqa: E501
    "SSHChannel.send_packet": "00e81b763c8f3dd2f3012a14cb28f5824ab653940b03f548abad871db918c0ae",
    "SSHChannel._flush_send_buf": "3f11e9dc27c58b18847c12007b945cb36c7767def131c9b96b0c0a81a8b72dbc",  # noqa: E501
    "SFTPHandler.send_packet": "0c22ab5cc5f282e978663b58f0a1ce6405b95b8cd12479d3df54df0e90f5e326",
    "GCMCipher.__init__": "8dbe9e768f4ecf7a4bac1641c2e574c2914e72c8c06d47eeb81f1355bc44c6a3",
    "GCMCipher.encrypt_and_sign": "adb87dbdb4f9039ab1f0029bd845b032bd6571d2ae894c7b067ea1f62bb0726e",  # noqa: E501
    "GCMCipher.verify_and_decrypt": "c09eb5b36d0f6a92a6df6430e70d479dbd6354f3403b98b65e9dc9ecccc37b52",  # noqa: E501
    "GCMEncryption.decrypt_packet": "6feb840baa1102a45480a86f2bba0c24c1cb17d2baef0baefcb6b6bad7217ecb",  # noqa: E501
    "SSHConnection._recv_packet": "b3daa22e9763eee9f3ec710d1469c1b54c8df5066bae3e65b66bdf1db8063c8b",  # noqa: E501
    "GCMEncryption.decrypt_header": "50d9112c6d6c1ced2db1cea7cde9f43b079ff0c6ae2b5c2213646c3db51bb293",  # noqa: E501
    "SSHConnection._process_kexinit": "439bdf2fc55e67370a3e0c1c5e1276fc2c7e95a5fcfb5979914bac461f072666",  # noqa: E501
}


def _digest(func: object) -> str:
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()  # type: ignore[arg-type]


@pytest.fixture
def tuned() -> Iterator[None]:
    tuning.apply()
    yield


def test_pinned_version() -> None:
    assert asyncssh.__version__ == tuning.PINNED


@pytest.mark.parametrize("name", sorted(SOURCE_SHA256))
def test_original_unchanged(name: str) -> None:
    # A failure here means asyncssh changed code tuning.py copies or wraps:
    # re-read the new original, port the change (or drop it), update the hash.
    assert _digest(tuning.ORIGINALS[name]) == SOURCE_SHA256[name], name


def test_every_patch_pinned() -> None:
    assert set(tuning.PATCHES) <= set(tuning.ORIGINALS) == set(SOURCE_SHA256)


@pytest.mark.parametrize("name", sorted(tuning.PATCHES))
def test_patch_in_effect(tuned: None, name: str) -> None:
    owner, attr, replacement = tuning.PATCHES[name]
    assert owner.__dict__[attr] is replacement
    assert owner.__dict__[attr] is not tuning.ORIGINALS[name]


def test_kexinit_dispatch_in_effect(tuned: None) -> None:
    # asyncssh dispatches packets through a table holding the function itself.
    from asyncssh.connection import SSHConnection
    from asyncssh.constants import MSG_KEXINIT

    from conduit.gateway import kexinit

    assert SSHConnection._packet_handlers[MSG_KEXINIT] is kexinit.process_kexinit


def test_apply_refuses_other_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncssh, "__version__", "9.9.9")
    with pytest.raises(RuntimeError, match=r"2\.24\.1"):
        tuning.apply()


def test_gcm_output_identical_to_original(tuned: None) -> None:
    key, iv = os.urandom(16), os.urandom(12)
    ours, theirs, ours_in, theirs_in = (GCMCipher("aes128-gcm", key, iv) for _ in range(4))
    header, data = b"\0\0\1\0", os.urandom(256)
    for _ in range(3):  # the IVs advance identically
        sealed = ours.encrypt_and_sign(header, data)
        assert sealed == tuning.ORIGINALS["GCMCipher.encrypt_and_sign"](theirs, header, data)
        body, mac = sealed[0][4:], sealed[1]
        assert ours_in.verify_and_decrypt(header, body, mac) == data
        original = tuning.ORIGINALS["GCMCipher.verify_and_decrypt"]
        assert original(theirs_in, header, body, mac) == data
    assert ours_in.verify_and_decrypt(header, body, bytes(16)) is None


def test_log_formatting_skipped_unless_packet_logging(
    tuned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class Logged(asyncssh.packet.SSHPacketLogger):
        @property
        def logger(self) -> asyncssh.logging.SSHLogger:
            calls.append("formatted")
            return asyncssh.logging.logger

    Logged().log_sent_packet(94, 1, b"x")
    assert calls == []
    monkeypatch.setattr(asyncssh.logging.SSHLogger, "_debug_level", 3)
    Logged().log_sent_packet(94, 1, b"x")
    assert calls == ["formatted"]


# -- end to end: an asyncssh server and client in this process ---------------------------


async def _echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    while data := await process.stdin.read(65536):
        process.stdout.write(data)
        await process.stdout.drain()
    process.exit(0)


async def _round_trip(cipher: str, mac: str, payload: bytes) -> tuple[bytes, list[int]]:
    sent: list[int] = []
    tuned_send = asyncssh.connection.SSHConnection.send_packet

    def spy(
        self: asyncssh.connection.SSHConnection, pkttype: int, *args: bytes, **kw: object
    ) -> None:
        if self.is_server():
            sent.append(pkttype)
        tuned_send(self, pkttype, *args, **kw)  # type: ignore[arg-type]

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    asyncssh.connection.SSHConnection.send_packet = spy  # type: ignore[method-assign]
    try:
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[host_key],
            process_factory=_echo,
            authorized_client_keys=asyncssh.import_authorized_keys(
                client_key.export_public_key().decode()
            ),
            encryption_algs=[cipher],
            mac_algs=[mac],
            compression_algs=["none"],
            encoding=None,
        )
        port = server.sockets[0].getsockname()[1]
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            known_hosts=None,
            client_keys=[client_key],
            username="u",
            encryption_algs=[cipher],
            mac_algs=[mac],
            compression_algs=["none"],
        ) as conn:
            result = await conn.run(input=payload, encoding=None)
        server.close()
        await server.wait_closed()
    finally:
        asyncssh.connection.SSHConnection.send_packet = tuned_send  # type: ignore[method-assign]
    assert isinstance(result.stdout, bytes)
    return result.stdout, sent


@pytest.mark.parametrize(
    ("cipher", "mac", "ignores"),
    [
        ("aes128-gcm@openssh.com", "hmac-sha2-256", False),
        ("aes256-gcm@openssh.com", "hmac-sha2-256", False),
        ("chacha20-poly1305@openssh.com", "hmac-sha2-256", False),
        ("aes128-ctr", "hmac-sha2-256-etm@openssh.com", True),
        ("aes128-ctr", "hmac-sha2-256", True),
    ],
)
async def test_wire_round_trip(tuned: None, cipher: str, mac: str, ignores: bool) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    echoed, sent = await asyncio.wait_for(_round_trip(cipher, mac, payload), 60)
    assert echoed == payload
    after_kex = [t for t in sent if t > MSG_KEX_LAST]
    assert after_kex, "no connection-layer packets seen"
    # MSG_IGNORE before connection-layer packets only where it defends something.
    assert (MSG_IGNORE in sent) is ignores


# A loop shaped like a transfer: a few 300 KB buffers alive at once, then freed.
# Untuned glibc hands the freed top of the heap back to the kernel every round
# and faults it in again on the next; tuned, the pages stay.
_CHURN = """
import resource, sys
from conduit.gateway import tuning
if sys.argv[1] == "tuned":
    assert tuning.tune_malloc()
kept = b"k" * 300_000
del kept  # what the first freed packet does: glibc raises its mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    buffers = [b"x" * 300_000 for _ in range(4)]
    del buffers
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _churn_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(
    "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""), reason="glibc's mallopt only"
)
def test_malloc_tuning_keeps_buffer_pages() -> None:
    untuned, tuned = _churn_faults("untuned"), _churn_faults("tuned")
    # 200 rounds x 4 buffers x 73 pages is ~58,000 faults when the heap is trimmed.
    assert untuned > 20_000, untuned
    assert tuned < 2_000, tuned
