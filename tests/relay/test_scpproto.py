from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.storage.relay.scpproto import (
    DirLine,
    EndDir,
    FileLine,
    Reply,
    ReplyKind,
    ScpProtocolError,
    TimesLine,
    check_name,
    format_line,
    format_reply,
    parse_line,
    parse_reply,
)

GOOD_LINES = [
    (b"C0644 12 a.bin\n", FileLine(0o644, 12, "a.bin")),
    (b"C0600 0 empty\n", FileLine(0o600, 0, "empty")),
    (b"C0755 5 with space\n", FileLine(0o755, 5, "with space")),
    (b"C0644 3 -rf\n", FileLine(0o644, 3, "-rf")),
    (b"C0644 3 a;touch x\n", FileLine(0o644, 3, "a;touch x")),
    (b"C0644 1 $(id)\n", FileLine(0o644, 1, "$(id)")),
    (b"C0644 99999999999 big\n", FileLine(0o644, 99999999999, "big")),
    (b"D0755 0 dir\n", DirLine(0o755, "dir")),
    (b"E\n", EndDir()),
    (b"T1700000000 0 1700000001 0\n", TimesLine(1700000000, 1700000001)),
    (b"T1 5 2 6\n", TimesLine(1, 2, 5, 6)),
    ("C0644 4 caf\u00e9\n".encode(), FileLine(0o644, 4, "caf\u00e9")),
]

BAD_LINES = [
    b"",
    b"\n",
    b"C644 1 a\n",  # mode needs four digits
    b"C0648 1 a\n",  # not octal
    b"C0644 -1 a\n",
    b"C0644 01 a\n",  # no leading zeros
    b"C0644 1\n",  # no name
    b"C0644 1 \n",  # empty name
    b"C0644 1 a/b\n",
    b"C0644 1 ..\n",
    b"C0644 1 .\n",
    b"C0644 1 a\nb\n",
    b"C0644 1 a\0b\n",
    b"D0755 1x d\n",
    b"E extra\n",
    b"T1 0 2\n",
    b"T1 1000000 2 0\n",
    b"X0644 1 a\n",
    b"\x01error\n",
]


@pytest.mark.parametrize(("raw", "expected"), GOOD_LINES)
def test_parse_good_lines(raw: bytes, expected: object) -> None:
    assert parse_line(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), GOOD_LINES[:-3] + GOOD_LINES[-1:])
def test_format_is_inverse(raw: bytes, expected: FileLine) -> None:
    assert format_line(expected) == raw


@pytest.mark.parametrize("raw", BAD_LINES)
def test_parse_bad_lines(raw: bytes) -> None:
    with pytest.raises(ScpProtocolError):
        parse_line(raw)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "line\nbreak", "cr\rx", "nul\0"])
def test_format_refuses_bad_names(name: str) -> None:
    with pytest.raises(ScpProtocolError):
        format_line(FileLine(0o644, 1, name))
    with pytest.raises(ScpProtocolError):
        check_name(name)


def test_format_refuses_bad_numbers() -> None:
    with pytest.raises(ScpProtocolError):
        format_line(FileLine(0o644, -1, "a"))
    with pytest.raises(ScpProtocolError):
        format_line(FileLine(0o10000, 1, "a"))
    with pytest.raises(ScpProtocolError):
        format_line(TimesLine(-1, 0))


REPLIES = [
    (b"\0", Reply(ReplyKind.OK)),
    (
        b"\x01scp: /x: No such file or directory\n",
        Reply(ReplyKind.WARNING, "scp: /x: No such file or directory"),
    ),
    (b"\x02fatal\n", Reply(ReplyKind.FATAL, "fatal")),
    (b"\x01\n", Reply(ReplyKind.WARNING, "")),
]


@pytest.mark.parametrize(("raw", "expected"), REPLIES)
def test_replies(raw: bytes, expected: Reply) -> None:
    assert parse_reply(raw) == expected
    assert format_reply(expected) == raw
    assert parse_reply(raw).ok is (expected.kind is ReplyKind.OK)


@pytest.mark.parametrize("raw", [b"", b"\x03x\n", b"C0644 1 a\n", b"\x01a\nb\n"])
def test_bad_replies(raw: bytes) -> None:
    with pytest.raises(ScpProtocolError):
        parse_reply(raw)


def test_reply_message_loses_line_breaks() -> None:
    assert format_reply(Reply(ReplyKind.FATAL, "a\nb")) == b"\x02a b\n"


names = st.text(
    alphabet=st.characters(blacklist_characters="/\0\n\r", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=80,
).filter(lambda n: n not in (".", ".."))


@given(mode=st.integers(0, 0o7777), size=st.integers(0, 2**63), name=names)
def test_file_line_roundtrip(mode: int, size: int, name: str) -> None:
    raw = format_line(FileLine(mode, size, name))
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert parse_line(raw) == FileLine(mode, size, name)


@given(mode=st.integers(0, 0o7777), name=names)
def test_dir_line_roundtrip(mode: int, name: str) -> None:
    assert parse_line(format_line(DirLine(mode, name))) == DirLine(mode, name)


@given(
    mtime=st.integers(0, 2**40),
    atime=st.integers(0, 2**40),
    mu=st.integers(0, 999_999),
    au=st.integers(0, 999_999),
)
def test_times_roundtrip(mtime: int, atime: int, mu: int, au: int) -> None:
    line = TimesLine(mtime, atime, mu, au)
    assert parse_line(format_line(line)) == line


@given(st.binary(max_size=200))
def test_parser_never_crashes(raw: bytes) -> None:
    try:
        line = parse_line(raw)
    except ScpProtocolError:
        return
    if isinstance(line, FileLine | DirLine):
        assert "/" not in line.name and "\n" not in line.name
        assert line.name not in (".", "..")


@given(name=st.text(min_size=1, max_size=40))
def test_names_with_line_breaks_never_format(name: str) -> None:
    if "\n" in name or "\r" in name:
        with pytest.raises(ScpProtocolError):
            format_line(FileLine(0o644, 0, name))
