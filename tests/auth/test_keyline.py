"""authorized_keys lines: options, OpenSSH's from= rules, expiry, bad lines."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduit.auth.keyline import KeyLineError, from_allows, parse_line, parse_time
from tests.support.gateway import make_key


@pytest.fixture(scope="module")
def pub(tmp_path_factory: pytest.TempPathFactory) -> str:
    key = make_key(tmp_path_factory.mktemp("kl"), "k")
    return key.with_suffix(".pub").read_text().strip()


@pytest.mark.parametrize(
    "line",
    [
        'from="10.0.0.0/8',
        "from=10.0.0.0/8",
        'from="10.0.0.0/33"',
        'from=""',
        'expiry-time="2027"',
        'expiry-time="20271301"',
        "no-pty,",
        'command="ls',
    ],
)
def test_bad_lines_are_errors(pub: str, line: str) -> None:
    with pytest.raises(KeyLineError) as info:
        parse_line(f"{line} {pub}")
    assert str(info.value)


@pytest.mark.parametrize("text", ["", "ssh-ed25519", "ssh-ed25519 AAAAnot", "hello world"])
def test_not_a_key(text: str) -> None:
    with pytest.raises(KeyLineError):
        parse_line(text)


def test_options_comment_and_quoting(pub: str) -> None:
    line = parse_line(
        f'restrict,from="10.1.0.0/16,!10.1.2.3",environment="A=\\"b,c\\"" {pub} my laptop'
    )
    assert line.sources == ("10.1.0.0/16", "!10.1.2.3")
    assert line.comment.endswith("my laptop")
    assert line.unhonoured is None
    assert line.refusal(ip_address("10.1.0.9")) is None
    assert "not allowed by the key's from= option" in (line.refusal(ip_address("10.1.2.3")) or "")
    assert line.refusal(ip_address("192.0.2.1")) is not None


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        ('command="ls"', "a forced command cannot be honoured"),
        ("verify-required", "FIDO user verification"),
        ("cert-authority", "trusted_user_ca_keys"),
        ("frobnicate", "unknown key option 'frobnicate'"),
        ("no-pty,frobnicate", "unknown key option 'frobnicate'"),
    ],
)
def test_unhonoured_options_refuse_every_login(pub: str, option: str, reason: str) -> None:
    line = parse_line(f"{option} {pub}")
    assert reason in (line.refusal(ip_address("127.0.0.1")) or "")


@pytest.mark.parametrize(
    ("patterns", "address", "allowed"),
    [
        (("127.0.0.1",), "127.0.0.1", True),
        (("127.0.0.*",), "127.0.0.9", True),
        (("127.0.0.?",), "127.0.0.10", False),
        (("10.0.0.0/8", "!10.9.0.0/16"), "10.9.1.1", False),
        (("!10.9.0.0/16", "10.0.0.0/8"), "10.9.1.1", False),
        (("!10.9.0.0/16",), "10.1.1.1", False),  # nothing positive matched
        (("*", "!192.0.2.1"), "192.0.2.2", True),
        (("2001:db8::/32",), "2001:db8::1", True),
        (("10.0.0.0/8",), "2001:db8::1", False),
        (("gateway.example.com",), "10.0.0.1", False),  # no DNS: names never match
        (("10.0.0.0/8",), "::ffff:10.1.2.3", True),  # IPv4 on a dual-stack socket
        (("10.1.2.3",), "::ffff:10.1.2.3", True),
    ],
)
def test_from_follows_openssh(patterns: tuple[str, ...], address: str, allowed: bool) -> None:
    assert from_allows(patterns, ip_address(address)) is allowed


def test_expiry(pub: str) -> None:
    line = parse_line(f'expiry-time="20300101Z" {pub}')
    assert line.expiry == parse_time("20300101Z") == 1893456000.0
    assert line.refusal(ip_address("127.0.0.1"), now=1893455999.0) is None
    assert (
        line.refusal(ip_address("127.0.0.1"), now=1893456000.0)
        == "key expired (expiry-time option)"
    )
    assert parse_time("203001011230Z") == 1893456000.0 + 12.5 * 3600
    assert parse_time("20300101123005Z") == 1893456000.0 + 12.5 * 3600 + 5


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=120))
def test_garbage_options_never_crash(pub: str, garbage: str) -> None:
    try:
        parse_line(f"{garbage} {pub}")
    except KeyLineError as exc:
        assert str(exc)


def test_a_plain_key_line_parses(pub: str) -> None:
    line = parse_line(pub)
    assert line.sources is None and line.expiry is None and line.unhonoured is None
