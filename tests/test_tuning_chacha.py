"""conduit._asyncssh.chacha: ChaCha20-Poly1305 with one keystream per packet (change 14).

The replacements are compared byte for byte with asyncssh's own
``ChachaCipher`` methods on hypothesis-generated keys, headers, bodies and
nonces (memoryviews too, which asyncssh's own cannot take), every wrong or
truncated tag is refused as asyncssh refuses it, the ChaCha20 contexts per
packet are counted (two, not asyncssh's three: fails on the code before it),
and a connection under chacha20-poly1305 is run end to end, rekeying every
MiB, and tampered with (disconnected with asyncssh's own ``MACError``, with
and without the change). Real OpenSSH clients through the gateway are in
tests/gateway/test_chacha_clients.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_CHANNEL_DATA
from asyncssh.crypto import chacha as asyncssh_chacha
from asyncssh.crypto.chacha import ChachaCipher
from asyncssh.encryption import ChachaEncryption
from asyncssh.packet import String, UInt32
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conduit._asyncssh import chacha, gcm, tuning
from tests.test_tuning import echo_over_ssh, echo_server

CHACHA = ["chacha20-poly1305@openssh.com"]

_seal = chacha.ORIGINALS["ChachaCipher.encrypt_and_sign"]
_open_header = chacha.ORIGINALS["ChachaCipher.decrypt_header"]
_open = chacha.ORIGINALS["ChachaCipher.verify_and_decrypt"]
_decrypt_packet = chacha.ORIGINALS["ChachaEncryption.decrypt_packet"]

keys = st.binary(min_size=64, max_size=64)
nonces = st.binary(min_size=8, max_size=8)
bodies = st.binary(max_size=3000)
headers = st.binary(max_size=8)


@pytest.fixture
def tuned() -> Iterator[None]:
    tuning.apply()
    yield
    tuning.apply()  # the rest of the session runs tuned, as the gateway does


def _view(data: bytes, as_view: bool) -> Any:
    return memoryview(data) if as_view else data


# -- byte for byte what asyncssh's ChachaCipher does ---------------------------------------


@settings(max_examples=300, deadline=None)
@given(key=keys, header=headers, body=bodies, nonce=nonces, as_view=st.booleans())
@example(key=bytes(64), header=bytes(4), body=b"", nonce=bytes(8), as_view=True)
@example(key=bytes(64), header=b"", body=b"", nonce=bytes(8), as_view=False)
def test_identical_to_asyncssh(
    key: bytes, header: bytes, body: bytes, nonce: bytes, as_view: bool
) -> None:
    cipher = ChachaCipher(key)
    sealed, tag = chacha._encrypt_and_sign(
        cipher, _view(header, as_view), _view(body, as_view), _view(nonce, as_view)
    )
    assert (sealed, tag) == _seal(cipher, header, body, nonce)
    assert type(sealed) is bytes and type(tag) is bytes
    enc_header, enc_body = sealed[: len(header)], sealed[len(header) :]

    decrypted = chacha._decrypt_header(cipher, _view(enc_header, as_view), _view(nonce, as_view))
    assert decrypted == _open_header(cipher, enc_header, nonce) == header
    assert type(decrypted) is bytes

    opened = chacha._verify_and_decrypt(
        cipher,
        _view(enc_header, as_view),
        _view(enc_body, as_view),
        _view(nonce, as_view),
        _view(tag, as_view),
    )
    assert opened == _open(cipher, enc_header, enc_body, nonce, tag) == body
    assert type(opened) is bytes


@settings(max_examples=60, deadline=None)
@given(key=keys, body=bodies, nonce=nonces, flip=st.integers(1, 255), as_view=st.booleans())
def test_every_wrong_tag_refused_as_asyncssh_does(
    key: bytes, body: bytes, nonce: bytes, flip: int, as_view: bool
) -> None:
    cipher = ChachaCipher(key)
    header = os.urandom(4)
    sealed, tag = _seal(cipher, header, body, nonce)
    enc_header, enc_body = sealed[:4], sealed[4:]

    def both(hdr: bytes, data: bytes, nonce_: bytes, tag_: bytes) -> tuple[Any, Any]:
        ours = chacha._verify_and_decrypt(
            cipher, _view(hdr, as_view), _view(data, as_view), nonce_, _view(tag_, as_view)
        )
        return ours, _open(cipher, hdr, data, nonce_, tag_)

    for at in range(len(tag)):  # a wrong byte at every position of the tag
        wrong = bytearray(tag)
        wrong[at] ^= flip
        assert both(enc_header, enc_body, nonce, bytes(wrong)) == (None, None), at
    for size in range(len(tag)):  # truncated, to every length
        assert both(enc_header, enc_body, nonce, tag[:size]) == (None, None), size
    assert both(enc_header, enc_body, nonce, tag + b"\0") == (None, None)  # too long
    for at in range(4):  # the encrypted length is authenticated
        wrong = bytearray(enc_header)
        wrong[at] ^= flip
        assert both(bytes(wrong), enc_body, nonce, tag) == (None, None)
    if enc_body:
        wrong = bytearray(enc_body)
        wrong[len(wrong) // 2] ^= flip
        assert both(enc_header, bytes(wrong), nonce, tag) == (None, None)
    other = (int.from_bytes(nonce, "big") ^ 1).to_bytes(8, "big")  # another sequence number
    assert both(enc_header, enc_body, other, tag) == (None, None)


@pytest.mark.parametrize("size", [32768 + 8, 255 * 1024 + 13])
def test_large_packets_identical(size: int) -> None:
    # Past the first keystream blocks and ChaCha20's internal chunking.
    cipher, header, body, nonce = ChachaCipher(os.urandom(64)), os.urandom(4), b"", os.urandom(8)
    body = os.urandom(size)
    sealed, tag = chacha._encrypt_and_sign(cipher, header, memoryview(body), nonce)
    assert (sealed, tag) == _seal(cipher, header, body, nonce)
    view = memoryview(sealed)
    assert chacha._verify_and_decrypt(cipher, view[:4], view[4:], nonce, tag) == body


def test_a_tag_that_is_not_bytes_like_raises_as_before() -> None:
    cipher = ChachaCipher(os.urandom(64))
    with pytest.raises(TypeError):
        _open(cipher, b"abcd", b"efgh", bytes(8), "tag")
    with pytest.raises(TypeError):
        chacha._verify_and_decrypt(cipher, b"abcd", b"efgh", bytes(8), "tag")


@settings(max_examples=100, deadline=None)
@given(key=keys, body=bodies, seq=st.integers(0, 0xFFFFFFFF), good=st.booleans())
def test_decrypt_packet_takes_views(key: bytes, body: bytes, seq: int, good: bool) -> None:
    # ChachaEncryption.decrypt_packet with the receive buffer's slices as
    # memoryviews (asyncssh's own concatenates them: bytes only), as asyncssh's.
    tuning.apply()  # (it calls the cipher's methods: those installed)
    enc = ChachaEncryption(ChachaCipher(key))
    header = len(body).to_bytes(4, "big")
    sealed, tag = enc.encrypt_packet(seq, header, body)
    tag = tag if good else bytes(16)
    first, rest = sealed[:8], sealed[8:]
    ours = chacha._decrypt_packet(enc, seq, memoryview(first), memoryview(rest), 4, tag)
    theirs = _decrypt_packet(enc, seq, first, rest, 4, tag)
    assert ours == theirs == (body if good else None)


# -- two ChaCha20 contexts per packet, not three -------------------------------------------


@pytest.fixture
def contexts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """ChaCha20 contexts built, by this module's methods or asyncssh's."""
    count = [0]
    real = chacha.Cipher

    def counting(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(chacha, "Cipher", counting)
    monkeypatch.setattr(asyncssh_chacha, "Cipher", counting)
    return count


def test_one_keystream_for_key_and_body(tuned: None, contexts: list[int]) -> None:
    cipher, nonce = ChachaCipher(os.urandom(64)), os.urandom(8)
    sealed, tag = cipher.encrypt_and_sign(b"\0\0\0\x10", bytes(16), nonce)
    assert contexts[0] == 2  # the length's, and one for the Poly1305 key and the body
    assert cipher.verify_and_decrypt(sealed[:4], sealed[4:], nonce, tag) == bytes(16)
    assert contexts[0] == 3  # asyncssh's: two (the Poly1305 key's, the body's)
    assert cipher.decrypt_header(sealed[:4], nonce) == b"\0\0\0\x10"
    assert contexts[0] == 4
    assert cipher.verify_and_decrypt(sealed[:4], sealed[4:], nonce, bytes(16)) is None
    assert contexts[0] == 5


def test_installed_and_reverted() -> None:
    def installed() -> list[bool]:
        return [
            owner.__dict__[name] is replacement
            for owner, name, replacement in chacha.PATCHES.values()
        ]

    tuning.apply()
    assert all(installed())
    try:
        tuning.revert()
        for key, (owner, name, _) in chacha.PATCHES.items():
            assert owner.__dict__[name] is chacha.ORIGINALS[key], key
        assert ChachaEncryption not in gcm.VIEWS  # the receive buffer: bytes again
        tuning.revert()  # idempotent
        assert not any(installed())
    finally:
        tuning.apply()
    assert all(installed()) and ChachaEncryption in gcm.VIEWS
    tuning.apply()  # idempotent
    assert all(installed()) and ChachaEncryption in gcm.VIEWS


# -- end to end: asyncssh both ends, rekeying every MiB ---------------------------------


@pytest.mark.parametrize("pktsize", [7_000, 32_768])
async def test_round_trip_rekeying(
    tuned: None, contexts: list[int], monkeypatch: pytest.MonkeyPatch, pktsize: int
) -> None:
    calls = {"encrypt_and_sign": 0, "decrypt_header": 0, "verify_and_decrypt": 0}
    for name in calls:
        installed = getattr(ChachaCipher, name)

        def spy(self: Any, *args: Any, _name: str = name, _installed: Any = installed) -> Any:
            calls[_name] += 1
            return _installed(self, *args)

        monkeypatch.setattr(ChachaCipher, name, spy)
    pieces: set[type] = set()
    decrypt_packet = ChachaEncryption.decrypt_packet

    def watching(self: Any, seq: int, first: Any, rest: Any, *args: Any) -> Any:
        pieces.update((type(first), type(rest)))
        return decrypt_packet(self, seq, first, rest, *args)

    monkeypatch.setattr(ChachaEncryption, "decrypt_packet", watching)
    payload = os.urandom(3 * 1024 * 1024 + 333)
    both = {"encryption_algs": CHACHA, "rekey_bytes": 1024 * 1024}
    echoed = await asyncio.wait_for(echo_over_ssh(payload, both, max_pktsize=pktsize), 60)
    assert echoed == payload
    # The receive buffer was a memoryview: packets were cut off it as views
    # (bytes too: those that came in with the last key exchange's NEWKEYS).
    assert memoryview in pieces
    # Every packet after the first key exchange: sealed with two contexts (the
    # length's; the Poly1305 key's and the body's), its length opened with one,
    # its tag and body with one; asyncssh's own methods build 3, 1 and 2.
    sealed, opened = calls["encrypt_and_sign"], calls["verify_and_decrypt"]
    assert contexts[0] == 2 * sealed + calls["decrypt_header"] + opened
    assert sealed >= len(payload) // pktsize and opened >= len(payload) // pktsize


# -- a tampered packet: asyncssh's MACError, with the change and without ------------------


def _flip_body(packet: bytearray) -> None:
    packet[20] ^= 1


def _flip_tag(packet: bytearray) -> None:
    packet[-1] ^= 1


def _flip_length(packet: bytearray) -> None:
    packet[0] ^= 0x80  # the encrypted length: a length over any limit


async def _tampered(edit: Callable[[bytearray], None]) -> tuple[int, str]:
    """The disconnect the client gets for one tampered channel data packet."""
    lost: list[BaseException | None] = []

    class Client(asyncssh.SSHClient):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(exc)

    async with echo_server(encryption_algs=CHACHA, line_editor=False) as (port, client_key):
        conn, _ = await asyncssh.create_connection(
            Client, "127.0.0.1", port, known_hosts=None, client_keys=[client_key], username="u"
        )
        async with conn:
            chan, _ = await conn.create_session(asyncssh.SSHClientSession, encoding=None)
            send = conn._send

            def tampered(data: bytes) -> None:
                packet = bytearray(data)
                edit(packet)
                conn._send = send  # type: ignore[method-assign]
                send(bytes(packet))

            conn._send = tampered  # type: ignore[method-assign]
            conn.send_packet(MSG_CHANNEL_DATA, UInt32(chan._send_chan), String(b"x" * 100))
            await asyncio.wait_for(conn.wait_closed(), 10)
    (exc,) = lost
    assert isinstance(exc, asyncssh.DisconnectError), exc
    return exc.code, exc.reason


@pytest.mark.parametrize(
    "edit", [_flip_body, _flip_tag, _flip_length], ids=["body", "tag", "length"]
)
async def test_tampered_packet_refused_as_asyncssh_does(
    edit: Callable[[bytearray], None],
) -> None:
    tuning.apply()
    ours = await _tampered(edit)
    tuning.revert()
    try:
        theirs = await _tampered(edit)
    finally:
        tuning.apply()
    assert ours == theirs
    if edit is _flip_length:
        assert ours[0] == asyncssh.DISC_PROTOCOL_ERROR  # 'Max packet size exceeded'
    else:
        assert ours == (asyncssh.DISC_MAC_ERROR, "MAC verification failed")
