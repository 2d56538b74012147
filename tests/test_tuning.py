"""The run-time changes to asyncssh: still applicable, in effect, and harmless to the wire."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest
from asyncssh import connection, packet
from asyncssh.crypto import cipher

from conduit.gateway import tuning


@pytest.mark.parametrize("name", sorted(tuning.EXPECTED_SOURCES))
def test_patched_functions_are_the_ones_we_measured(name: str) -> None:
    # Fails after an asyncssh upgrade that changed a function we replace:
    # re-measure, re-check the reasoning in tuning.py, then update the digest.
    assert tuning.source_digest(tuning.targets()[name]) == tuning.EXPECTED_SOURCES[name]


def test_pinned_version_is_installed() -> None:
    assert asyncssh.__version__ == tuning.PINNED


def test_changes_are_in_effect_after_apply() -> None:
    tuning.apply()
    tuning.apply()  # idempotent
    assert connection.SSHConnection.send_packet is tuning._send_packet
    assert packet.SSHPacketLogger._log_packet is tuning._log_packet
    assert cipher.GCMCipher.encrypt_and_sign is tuning._encrypt_and_sign
    assert cipher.GCMCipher.verify_and_decrypt is tuning._verify_and_decrypt


def test_gcm_round_trip_matches_the_original() -> None:
    key, iv = bytes(range(16)), bytes(range(12))
    ours, theirs = cipher.GCMCipher("aes128-gcm", key, iv), cipher.GCMCipher("aes128-gcm", key, iv)
    for n in range(3):  # the nonce advances per packet, as before
        header, body = b"\0\0\0\x10", bytes([n]) * 16
        assert tuning._encrypt_and_sign(ours, header, body) == tuning._original_encrypt(
            theirs, header, body
        )
    reader = cipher.GCMCipher("aes128-gcm", key, iv)
    sealed, tag = tuning._original_encrypt(
        cipher.GCMCipher("aes128-gcm", key, iv), b"hdr!", b"payload"
    )
    assert tuning._verify_and_decrypt(reader, b"hdr!", sealed[4:], tag) == b"payload"
    bad = cipher.GCMCipher("aes128-gcm", key, iv)
    assert tuning._verify_and_decrypt(bad, b"hdr!", sealed[4:], bytes(16)) is None


@pytest.mark.parametrize(
    ("cipher_name", "ignores"),
    [
        ("aes128-gcm@openssh.com", False),
        ("chacha20-poly1305@openssh.com", False),
        ("aes128-ctr", True),  # non-AEAD keeps the CBC-era countermeasure
    ],
)
def test_ignore_packets_only_for_non_aead(cipher_name: str, ignores: bool) -> None:
    tuning.apply()
    sent: list[int] = []
    original = tuning._original_send_packet

    def spy(self, pkttype, *args, handler=None):  # type: ignore[no-untyped-def]
        sent.append(pkttype)
        original(self, pkttype, *args, handler=handler)

    async def scenario() -> None:
        key = asyncssh.generate_private_key("ssh-ed25519")

        class Server(asyncssh.SSHServer):
            def begin_auth(self, username: str) -> bool:
                return False

        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[key],
            server_factory=Server,
            encryption_algs=[cipher_name],
        )
        port = server.sockets[0].getsockname()[1]
        tuning._original_send_packet = spy
        try:
            async with asyncssh.connect(
                "127.0.0.1", port, known_hosts=None, encryption_algs=[cipher_name]
            ) as conn:
                result = await conn.run("true")  # opens a channel: connection-layer packets
                del result
        except asyncssh.Error:
            pass
        finally:
            tuning._original_send_packet = original
            server.close()

    asyncio.run(scenario())
    assert (connection.MSG_IGNORE in sent) is ignores
