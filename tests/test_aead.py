"""conduit._asyncssh.aead: one packet opened or sealed as asyncssh's own path does.

The lanes' per-cipher step, against asyncssh's ``ChachaEncryption`` and
``GCMEncryption`` with real keys: what the send lane seals is byte for byte
what ``encrypt_packet`` makes; what asyncssh seals the receive lane opens,
from ``bytes`` or a memoryview (the buffer is one under AES-GCM, and a rekey
can leave one behind), whole or arriving in pieces; a packet it must not
take is left (None) with nothing changed. The lanes themselves, with real
peers: tests/test_tuning_recvlane.py and tests/test_sendlane.py.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest
from asyncssh.crypto.chacha import ChachaCipher
from asyncssh.encryption import get_encryption
from asyncssh.packet import UInt32, UInt64

from conduit._asyncssh import aead, tuning

CHACHA = b"chacha20-poly1305@openssh.com"
GCM = b"aes128-gcm@openssh.com"


@pytest.fixture(autouse=True)
def _tuned() -> None:
    tuning.apply()  # GCM's lanes rely on tuning 2's AESGCM per key


def _pair(alg: bytes) -> tuple[Any, Any]:
    """A sender's and a receiver's encryption under the same fresh keys."""
    key, iv = os.urandom(64 if alg == CHACHA else 16), os.urandom(12)
    return get_encryption(alg, key, iv), get_encryption(alg, key, iv)


def _body(size: int) -> bytes:
    """Padding length, payload, padding: ``size`` bytes as asyncssh pads them."""
    return bytes([4]) + os.urandom(size - 5) + bytes(4)


def _conn(seq: int) -> Any:
    return SimpleNamespace(_recv_seq=seq, _max_recv_pktlen=35_000)


@pytest.mark.parametrize("alg", [CHACHA, GCM])
@pytest.mark.parametrize("size", [16, 32_784])
def test_seal_is_encrypt_packet(alg: bytes, size: int) -> None:
    ours, theirs = _pair(alg)
    for seq in (0, 7, 0xFFFFFFFF):  # GCM's IV moves on alike each time
        body = _body(size)
        header = UInt32(len(body))
        sealed, mac = theirs.encrypt_packet(seq, header, body)
        assert aead.SEALERS[type(ours)](ours, header, body, seq) == sealed + mac


@pytest.mark.parametrize("view", [False, True], ids=["bytes", "memoryview"])
@pytest.mark.parametrize("alg", [CHACHA, GCM])
def test_open_what_asyncssh_sealed(alg: bytes, view: bool) -> None:
    sender, receiver = _pair(alg)
    body = _body(1024)
    sealed, mac = sender.encrypt_packet(41, UInt32(len(body)), body)
    after = os.urandom(100)  # the next packet's first bytes
    buf: Any = sealed + mac + after
    if view:
        buf = memoryview(buf)
    opened = aead.OPENERS[type(receiver)](_conn(41), receiver, buf)
    # GCM: and the IV after it, as the sender's cipher moved on (ChaCha20: none).
    next_iv = sender._cipher._iv if alg == GCM else None
    assert opened == (body, len(sealed + mac), next_iv)


def test_chacha_length_decrypted_once_while_the_packet_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender, receiver = _pair(CHACHA)
    calls: list[int] = []
    decrypt_header = ChachaCipher.decrypt_header

    def counted(self: Any, header: Any, nonce: Any) -> bytes:
        calls.append(int.from_bytes(nonce, "big"))
        return decrypt_header(self, header, nonce)

    monkeypatch.setattr(ChachaCipher, "decrypt_header", counted)
    first, second = _body(32_784), _body(40)
    packets = [
        b"".join(sender.encrypt_packet(s, UInt32(len(b)), b)) for s, b in [(5, first), (6, second)]
    ]
    wire = packets[0] + packets[1]
    conn = _conn(5)
    for cut in range(8, len(packets[0]), 1000):
        assert aead.open_chacha(conn, receiver, wire[:cut]) is False
    assert calls == [5]  # the first arrival only
    assert aead.open_chacha(conn, receiver, wire) == (first, len(packets[0]), None)
    assert calls == [5]
    conn._recv_seq = 6
    rest = wire[len(packets[0]) :]
    assert aead.open_chacha(conn, receiver, rest) == (second, len(rest), None)
    assert calls == [5, 6]  # a new sequence number: a new length


def test_chacha_known_length_is_for_those_bytes_only() -> None:
    # The same sequence number with other bytes in front (e.g. a length not
    # yet whole, then asyncssh's path took it): decrypted again, not reused.
    sender, receiver = _pair(CHACHA)
    body = _body(1024)
    packet = b"".join(sender.encrypt_packet(9, UInt32(len(body)), body))
    conn = _conn(9)
    assert aead.open_chacha(conn, receiver, packet[:100]) is False
    other = bytes(4) + packet[4:]
    assert aead.open_chacha(conn, receiver, other) in (None, False)  # its own length
    assert aead.open_chacha(conn, receiver, packet) == (body, len(packet), None)


@pytest.mark.parametrize("alg", [CHACHA, GCM])
def test_left_to_asyncssh(alg: bytes) -> None:
    sender, receiver = _pair(alg)
    opener = aead.OPENERS[type(receiver)]
    body = _body(64)
    packet = b"".join(sender.encrypt_packet(3, UInt32(len(body)), body))
    assert opener(_conn(3), receiver, packet[:3]) is None  # not even the length
    bad_tag = packet[:-1] + bytes([packet[-1] ^ 1])
    assert opener(_conn(3), receiver, bad_tag) is None
    if alg == CHACHA:
        # Another number: another length (over the limit but for 1 in ~120,000).
        assert opener(_conn(4), receiver, packet) in (None, False)
        assert opener(_conn(3), receiver, packet) == (body, len(packet), None)
    limit = SimpleNamespace(_recv_seq=3, _max_recv_pktlen=63)
    assert opener(limit, receiver, packet) is None  # over the limit
    tiny = bytes([4]) + bytes(5)  # 6 bytes: shorter than any packet a lane takes
    short = b"".join(sender.encrypt_packet(5, UInt32(len(tiny)), tiny))
    if alg == CHACHA:
        assert opener(_conn(5), receiver, short) is None
    if alg == GCM:  # nothing consumed: the IV is where it was, the packet still opens
        assert opener(_conn(3), receiver, packet)[:2] == (body, len(packet))  # type: ignore[index]


def test_chacha_nonce_is_the_sequence_number() -> None:
    sender, receiver = _pair(CHACHA)
    body = _body(256)
    header = UInt32(len(body))
    sealed = aead.seal_chacha(sender, header, body, 77)
    cipher = receiver._cipher
    assert cipher.decrypt_header(sealed[:4], UInt64(77)) == header
    assert cipher.verify_and_decrypt(sealed[:4], sealed[4:-16], UInt64(77), sealed[-16:]) == body
    assert cipher.verify_and_decrypt(sealed[:4], sealed[4:-16], UInt64(78), sealed[-16:]) is None
