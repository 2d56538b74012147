"""A client that guesses its first key-exchange packet (RFC 4253 section 7).

The guess is right only when client and server prefer the same key exchange
and host key algorithms; a wrong guess must be ignored and the key exchange
go on with the client's next packet. Driven by a raw client that sends a
KEXINIT with ``first_kex_packet_follows`` and a deliberately malformed guess
(which fails the key exchange if the server processes it), then the real
curve25519 packet.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.gateway import RunningGateway, policy_text
from tests.support.rawssh import (
    BAD_INIT,
    MSG_DISCONNECT,
    MSG_KEX_ECDH_REPLY,
    MSG_KEXINIT,
    MSG_NEWKEYS,
    RawClient,
    kexinit,
    x25519_init,
)


def answers(running: RunningGateway, kex: str, host_keys: str, *packets: bytes) -> list[int]:
    """The types of the server's packets after our KEXINIT and ``packets``,
    up to NEWKEYS or a disconnect (at most 4)."""
    client = RawClient(running.port)
    try:
        assert client.receive()[0] == MSG_KEXINIT
        client.send(kexinit(kex, host_keys, follows=True), *packets)
        seen: list[int] = []
        while len(seen) < 4 and (not seen or seen[-1] not in (MSG_NEWKEYS, MSG_DISCONNECT)):
            try:
                seen.append(client.receive()[0])
            except ConnectionError:
                seen.append(-1)  # closed without a word
        return seen
    finally:
        client.close()


@pytest.fixture
def curve_first(make_gateway: Callable[..., RunningGateway]) -> RunningGateway:
    """A gateway preferring curve25519-sha256 (so a curve25519 guess can be right)."""
    first = make_gateway()
    text = policy_text(first.root, first.keys).replace(
        "[gateway.limits]\n", '[gateway.crypto]\nkex = "^curve25519-sha256"\n\n[gateway.limits]\n'
    )
    return make_gateway(text=text)


def test_a_guess_of_a_kex_the_server_does_not_prefer_is_ignored(gw: RunningGateway) -> None:
    # The gateway prefers mlkem768x25519-sha256; the client prefers (and
    # guesses) curve25519-sha256, which the gateway supports: that is still
    # a wrong guess, and the real packet follows.
    seen = answers(gw, "curve25519-sha256", "ssh-ed25519", BAD_INIT, x25519_init())
    assert seen == [MSG_KEX_ECDH_REPLY, MSG_NEWKEYS]


def test_a_guess_of_an_unsupported_kex_is_ignored(gw: RunningGateway) -> None:
    kex = "diffie-hellman-group1-sha1,curve25519-sha256"
    seen = answers(gw, kex, "ssh-ed25519", BAD_INIT, x25519_init())
    assert seen == [MSG_KEX_ECDH_REPLY, MSG_NEWKEYS]


def test_a_guess_with_the_wrong_host_key_algorithm_is_ignored(
    curve_first: RunningGateway,
) -> None:
    host_keys = "rsa-sha2-512,ssh-ed25519"  # the gateway's only host key is Ed25519
    seen = answers(curve_first, "curve25519-sha256", host_keys, BAD_INIT, x25519_init())
    assert seen == [MSG_KEX_ECDH_REPLY, MSG_NEWKEYS]


def test_a_right_guess_is_used(curve_first: RunningGateway) -> None:
    seen = answers(curve_first, "curve25519-sha256", "ssh-ed25519", x25519_init())
    assert seen == [MSG_KEX_ECDH_REPLY, MSG_NEWKEYS]


def test_a_right_guess_that_is_malformed_fails(curve_first: RunningGateway) -> None:
    # The control for the tests above: a guess that is processed and
    # malformed does end the key exchange.
    seen = answers(curve_first, "curve25519-sha256", "ssh-ed25519", BAD_INIT)
    assert seen[-1] in (MSG_DISCONNECT, -1)
    assert MSG_KEX_ECDH_REPLY not in seen
