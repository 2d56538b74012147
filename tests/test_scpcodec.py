"""The one SCP codec (gateway server and relay client), pure: tables and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.names import has_controls, is_valid_name
from conduit.scpcodec import (
    LINE_END,
    MAX_LINE,
    MAX_SIZE,
    MAX_TIME,
    EndDirectory,
    FileHeader,
    PeerError,
    ScpNameRefused,
    ScpProtocolError,
    Times,
    error_line,
    format_line,
    parse_line,
    parse_reply,
)

GOOD = [
    (b"C0644 1234 fw.bin", FileHeader(False, 0o644, 1234, "fw.bin")),
    (b"C0600 0 empty\n", FileHeader(False, 0o600, 0, "empty")),
    (b"D0755 0 logs", FileHeader(True, 0o755, 0, "logs")),
    (b"C0644 5 with space.txt", FileHeader(False, 0o644, 5, "with space.txt")),
    (b"C4755 5 suid", FileHeader(False, 0o4755, 5, "suid")),
    (b"C0644 3 a;touch x", FileHeader(False, 0o644, 3, "a;touch x")),
    (b"C0644 1 $(id)", FileHeader(False, 0o644, 1, "$(id)")),
    (b"C0644 007 lead", FileHeader(False, 0o644, 7, "lead")),  # strtoull takes these too
    (b"C0644 9223372036854775807 max", FileHeader(False, 0o644, MAX_SIZE, "max")),
    ("C0644 4 caf\u00e9".encode(), FileHeader(False, 0o644, 4, "caf\u00e9")),
    ("C0644 4 \u05e9\u05dc\u05d5\u05dd.txt".encode(), FileHeader(False, 0o644, 4, "שלום.txt")),
    (b"T1600000000 0 1600000001 0", Times(1600000000, 1600000001)),
    (b"T1 5 2 6\n", Times(1, 2, 5, 6)),
    (b"T4294967295 999999 0 0", Times(MAX_TIME, 0, 999999, 0)),
    (b"E", EndDirectory()),
    (b"\x01scp: warning", PeerError(False, "scp: warning")),
    (b"\x02scp: fatal\n", PeerError(True, "scp: fatal")),
]


@pytest.mark.parametrize(("line", "expected"), GOOD)
def test_parse_line(line: bytes, expected: object) -> None:
    assert parse_line(line) == expected


# The message is OpenSSH's sink() text where it has one.
BAD = [
    (b"", "unexpected <newline>"),
    (b"\n", "unexpected <newline>"),
    (b"X", "expected control record"),
    (b"Ejunk", "expected control record"),
    (b"C-644 5 a", "bad mode"),
    (b"C644 1 a", "bad mode"),
    (b"C0999 1 a", "bad mode"),
    (b"Cxxxx 1 a", "bad mode"),
    (b"C06444 1 a", "mode not delimited"),
    (b"C0644 -1 a", "size not present"),
    (b"C0644 +1 a", "size not present"),
    ("C0644 \u00b2 a".encode(), "size not present"),  # ² is isdigit() in Python
    ("C0644 \u0665 a".encode(), "size not present"),  # Arabic-Indic 5: int() takes it
    ("C0644 1\u0665 a".encode(), "size not delimited"),
    (b"C0644 " + b"9" * 5000 + b" a", "size out of range"),
    (b"C0644 9223372036854775808 a", "size out of range"),
    (b"C0644 12", "size not delimited"),
    (b"C0644 1", "size not delimited"),
    (b"C0644 1 ", "unexpected filename"),
    (b"C0644 1 .", "unexpected filename"),
    (b"C0644 1 ..", "unexpected filename"),
    (b"C0644 1 a/b", "unexpected filename"),
    (b"C0644 1 ../../etc/passwd", "unexpected filename"),
    (b"D0755 0 /abs", "unexpected filename"),
    (b"T1 0 2", "atime.sec not delimited"),
    (b"Tx 0 y 0", "mtime.sec not present"),
    (b"T99999999999999999999 0 1 0", "mtime.sec out of range"),
    (b"T4294967296 0 1 0", "mtime.sec out of range"),
    (b"T1 0 4294967296 0", "atime.sec out of range"),
    ("T\u00b2 0 1 0".encode(), "mtime.sec not present"),
    ("T1 0 \u0661\u0662 0".encode(), "atime.sec not present"),
    (b"T1 1000000 2 0", "mtime.usec not delimited"),
    (b"T1 0 2 0 ", "atime.usec not delimited"),
    (b"C0644 1 a\nb", "line break"),
    (b"C" + b"0" * (MAX_LINE + 1), "too long"),
]


@pytest.mark.parametrize(("line", "message"), BAD)
def test_parse_line_refuses(line: bytes, message: str) -> None:
    with pytest.raises(ScpProtocolError, match=message) as caught:
        parse_line(line)
    assert not isinstance(caught.value, ScpNameRefused)


REFUSED_NAMES = [
    b"esc\x1b[31mRED\x1b[0m.txt",
    b"cr\rfake.txt",
    b"bell\x07",
    b"\x01start",
    b"dir\x1b]0;pwned\x07",
    "rlo\u202etxt.exe".encode(),
    "lrm\u200e.txt".encode(),
    "isolate\u2066x\u2069".encode(),
    "c1\u0085x".encode(),
    "sep\u2028x".encode(),
    b"del\x7f",
    b"nul\0x",
    b"\xff\xfe",
    b"a" * 256,
]


@pytest.mark.parametrize("name", REFUSED_NAMES)
@pytest.mark.parametrize("kind", [b"C0644 5 ", b"D0755 0 "])
def test_names_the_rule_refuses_are_refused_for_this_entry_only(kind: bytes, name: bytes) -> None:
    with pytest.raises(ScpNameRefused) as caught:
        parse_line(kind + name)
    assert caught.value.header.directory is kind.startswith(b"D")
    assert caught.value.header.size == int(kind.split()[1])


def test_format_is_the_inverse_of_parse() -> None:
    for raw, expected in GOOD:
        if isinstance(expected, PeerError) or b"007" in raw:
            continue
        assert parse_line(format_line(expected)) == expected


@pytest.mark.parametrize(
    "line",
    [
        FileHeader(False, 0o644, -1, "a"),
        FileHeader(False, 0o644, MAX_SIZE + 1, "a"),
        FileHeader(False, 0o10000, 1, "a"),
        FileHeader(False, 0o644, 1, "a/b"),
        FileHeader(False, 0o644, 1, ".."),
        FileHeader(False, 0o644, 1, "a\nC0644 1 evil"),
        FileHeader(True, 0o755, 0, "rlo\u202etxt"),
        Times(-1, 0),
        Times(MAX_TIME + 1, 0),
        Times(0, 0, 1_000_000, 0),
    ],
)
def test_format_refuses_what_parse_would(line: FileHeader | Times) -> None:
    with pytest.raises(ScpProtocolError):
        format_line(line)


REPLIES = [
    (b"\0", None),
    (
        b"\x01scp: /x: No such file or directory\n",
        PeerError(False, "scp: /x: No such file or directory"),
    ),
    (b"\x02fatal\n", PeerError(True, "fatal")),
    (b"\x01\n", PeerError(False, "")),
]


@pytest.mark.parametrize(("raw", "expected"), REPLIES)
def test_replies(raw: bytes, expected: PeerError | None) -> None:
    assert parse_reply(raw) == expected


@pytest.mark.parametrize("raw", [b"", b"\x03x\n", b"C0644 1 a\n", b"\x01a\nb\n"])
def test_bad_replies(raw: bytes) -> None:
    with pytest.raises(ScpProtocolError):
        parse_reply(raw)


def test_line_end_finds_a_line_or_says_it_is_too_long() -> None:
    match = LINE_END.search(b"C0644 1 a\nrest")
    assert match is not None and match.group() == b"C0644 1 a\n"
    assert LINE_END.search(b"no newline yet") is None
    long = LINE_END.search(b"x" * (MAX_LINE + 5))
    assert long is not None and len(long.group()) == MAX_LINE + 1
    assert not long.group().endswith(b"\n")


# -- properties ----------------------------------------------------------------------

names = st.text(min_size=1, max_size=60).filter(is_valid_name)


@given(st.booleans(), st.integers(0, 0o7777), st.integers(0, MAX_SIZE), names)
def test_file_line_round_trips(directory: bool, mode: int, size: int, name: str) -> None:
    header = FileHeader(directory, mode, size, name)
    raw = format_line(header)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert parse_line(raw) == header


@given(
    st.integers(0, MAX_TIME),
    st.integers(0, MAX_TIME),
    st.integers(0, 999_999),
    st.integers(0, 999_999),
)
def test_times_line_round_trips(mtime: int, atime: int, mu: int, au: int) -> None:
    line = Times(mtime, atime, mu, au)
    assert parse_line(format_line(line)) == line


# Lines that look like control lines: a real prefix, then digits of every
# script, signs, spaces and names with controls, so the checks past the
# first byte are reached.
_pieces = st.sampled_from(
    [
        "0",
        "7",
        "9",
        "0644",
        " ",
        "-",
        "+",
        "²",
        "\u0665",
        "\u0967",
        "1" * 25,
        "a",
        "\x1b",
        "\u202e",
        "/",
        "..",
        "\n",
        "\r",
    ]
)
control_like = st.builds(
    lambda kind, parts: kind + "".join(parts).encode("utf-8", "surrogatepass"),
    st.sampled_from([b"C", b"D", b"T", b"E", b"\x01", b"\x02"]),
    st.lists(_pieces, max_size=12),
)


@given(st.one_of(st.binary(max_size=300), control_like))
def test_every_parse_failure_is_a_protocol_error_with_a_clean_reply(raw: bytes) -> None:
    try:
        line = parse_line(raw)
    except ScpProtocolError as exc:
        reply = error_line(str(exc), fatal=not isinstance(exc, ScpNameRefused))
        assert reply[:1] in (b"\x01", b"\x02") and reply.endswith(b"\n")
        body = reply[1:-1].decode("utf-8")
        assert body.startswith("scp: ") and not has_controls(body)
        return
    if isinstance(line, FileHeader):
        assert is_valid_name(line.name)
        assert 0 <= line.mode <= 0o7777 and 0 <= line.size <= MAX_SIZE
    if isinstance(line, Times):
        assert 0 <= line.mtime <= MAX_TIME and 0 <= line.atime <= MAX_TIME


@given(st.text())
def test_error_line_is_always_one_clean_line(message: str) -> None:
    line = error_line(message)
    assert line.startswith(b"\x01scp: ") and line.endswith(b"\n") and line.count(b"\n") == 1
    assert not has_controls(line[1:-1].decode("utf-8"))
