"""Legacy SCP control lines, pure: tables and properties (no sockets)."""

from __future__ import annotations

import asyncssh.sftp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduit.gateway import sftp
from conduit.gateway.scpwire import (
    EndDirectory,
    FileHeader,
    PeerError,
    ScpProtocolError,
    Times,
    error_line,
    file_line,
    parse_line,
    times_line,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"C0644 1234 fw.bin", FileHeader(False, 0o644, 1234, "fw.bin")),
        (b"C0600 0 empty", FileHeader(False, 0o600, 0, "empty")),
        (b"D0755 0 logs", FileHeader(True, 0o755, 0, "logs")),
        (b"C0644 5 with space.txt", FileHeader(False, 0o644, 5, "with space.txt")),
        (b"C4755 5 suid", FileHeader(False, 0o4755, 5, "suid")),
        (b"T1600000000 0 1600000001 0", Times(mtime=1600000000, atime=1600000001)),
        (b"E", EndDirectory()),
        (b"\x01scp: warning", PeerError(False, "scp: warning")),
        (b"\x02scp: fatal", PeerError(True, "scp: fatal")),
    ],
)
def test_parse_line(line: bytes, expected: object) -> None:
    assert parse_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"X",
        b"C0644 12",
        b"C644 1 a",
        b"C0644 -1 a",
        b"C0644 1 ",
        b"C0644 1 .",
        b"C0644 1 ..",
        b"C0644 1 a/b",
        b"C0644 1 ../../etc/passwd",
        b"D0755 0 /abs",
        b"C0999 1 a",
        b"Cxxxx 1 a",
        b"T1 0 2",
        b"Tx 0 y 0",
        b"Ejunk",
        b"C0644 1 \xff",
    ],
)
def test_parse_line_refuses(line: bytes) -> None:
    with pytest.raises(ScpProtocolError):
        parse_line(line)


@given(
    st.booleans(),
    st.integers(0, 0o7777),
    st.integers(0, 2**63),
    st.text(min_size=1).filter(
        lambda n: n not in (".", "..") and "/" not in n and "\0" not in n and "\n" not in n
    ),
)
def test_file_line_round_trips(directory: bool, mode: int, size: int, name: str) -> None:
    header = FileHeader(directory, mode, 0 if directory else size, name)
    assert parse_line(file_line(header)[:-1]) == header


@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_times_line_round_trips(mtime: int, atime: int) -> None:
    assert parse_line(times_line(Times(mtime, atime))[:-1]) == Times(mtime, atime)


@given(st.text())
def test_error_line_is_always_one_line(message: str) -> None:
    line = error_line(message)
    assert line.startswith(b"\x01scp: ") and line.endswith(b"\n") and line.count(b"\n") == 1
    assert b"\r" not in line and b"\x1b" not in line


def test_newline_names_cannot_be_sent() -> None:
    with pytest.raises(ScpProtocolError):
        file_line(FileHeader(False, 0o644, 1, "a\nC0644 1 evil"))


def test_packet_type_constants_match_asyncssh() -> None:
    # Defined locally because asyncssh does not export them; fail if they drift.
    assert sftp.FXP_OPENDIR == asyncssh.sftp.FXP_OPENDIR  # type: ignore[attr-defined]
    assert sftp.FXP_NAME == asyncssh.sftp.FXP_NAME  # type: ignore[attr-defined]
