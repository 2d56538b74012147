"""Legacy SCP control lines: parse and format, nothing else.

The relay speaks the *client* side of the old rcp/scp protocol to devices
that have no SFTP subsystem. Everything here is pure: bytes in, values out,
so every rule is tested by tables and Hypothesis properties, and the asyncssh
glue in :mod:`conduit.storage.relay.scp` stays thin.

The protocol, as OpenSSH ``scp -t`` (sink) and ``scp -f`` (source) speak it:

* ``C<mode> <size> <name>\\n`` announces a file, followed by ``size`` bytes
  and a single ``\\0``;
* ``D<mode> 0 <name>\\n`` enters a directory, ``E\\n`` leaves it;
* ``T<mtime> 0 <atime> 0\\n`` gives the times of the next ``C``/``D``;
* each step is answered by one reply byte: ``\\0`` ok, ``\\1<text>\\n`` a
  warning (the transfer of that file failed), ``\\2<text>\\n`` fatal.

A name is one path component. Names with a newline cannot be expressed (the
line would end early) and names with ``/`` or equal to ``.``/``..`` would let a
peer escape its target folder; both are refused when formatting and parsing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

MAX_LINE = 64 * 1024
"""Longest control line accepted from a peer (OpenSSH uses 2048 + name)."""

MAX_MODE = 0o7777


class ScpProtocolError(ValueError):
    """A control line or reply that does not follow the protocol."""


@dataclass(frozen=True, slots=True)
class FileLine:
    """``C<mode> <size> <name>``: a regular file of ``size`` bytes follows."""

    mode: int
    size: int
    name: str


@dataclass(frozen=True, slots=True)
class DirLine:
    """``D<mode> 0 <name>``: entering a directory."""

    mode: int
    name: str


@dataclass(frozen=True, slots=True)
class EndDir:
    """``E``: leaving the current directory."""


@dataclass(frozen=True, slots=True)
class TimesLine:
    """``T<mtime> <usec> <atime> <usec>``: times for the next file or folder."""

    mtime: int
    atime: int
    mtime_usec: int = 0
    atime_usec: int = 0


ControlLine = FileLine | DirLine | EndDir | TimesLine


class ReplyKind(Enum):
    OK = 0
    WARNING = 1
    FATAL = 2


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply from the peer: ``\\0``, or ``\\1``/``\\2`` with a message."""

    kind: ReplyKind
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.kind is ReplyKind.OK


OK = b"\0"

_FILE_RE = re.compile(rb"C([0-7]{4}) (0|[1-9][0-9]{0,19}) (.+)\Z", re.DOTALL)
_DIR_RE = re.compile(rb"D([0-7]{4}) (0|[1-9][0-9]{0,19}) (.+)\Z", re.DOTALL)
_TIMES_RE = re.compile(rb"T([0-9]{1,20}) ([0-9]{1,6}) ([0-9]{1,20}) ([0-9]{1,6})\Z")


def check_name(name: str) -> str:
    """Return ``name`` if it can travel in a control line, else raise.

    Refused: empty, ``.``, ``..``, containing ``/``, NUL, CR or LF.
    """
    if not name or name in (".", ".."):
        raise ScpProtocolError("empty or dot name")
    if any(ch in name for ch in "/\0\n\r"):
        raise ScpProtocolError("name contains '/', NUL or a line break")
    return name


def _check_mode(mode: int) -> int:
    if not 0 <= mode <= MAX_MODE:
        raise ScpProtocolError("mode out of range")
    return mode


def format_line(line: ControlLine) -> bytes:
    """Encode one control line, including its trailing newline."""
    if isinstance(line, FileLine):
        if line.size < 0:
            raise ScpProtocolError("negative size")
        name = check_name(line.name).encode("utf-8", "surrogateescape")
        return b"C%04o %d %s\n" % (_check_mode(line.mode), line.size, name)
    if isinstance(line, DirLine):
        name = check_name(line.name).encode("utf-8", "surrogateescape")
        return b"D%04o 0 %s\n" % (_check_mode(line.mode), name)
    if isinstance(line, EndDir):
        return b"E\n"
    if min(line.mtime, line.atime) < 0 or not (
        0 <= line.mtime_usec <= 999_999 and 0 <= line.atime_usec <= 999_999
    ):
        raise ScpProtocolError("times out of range")
    return b"T%d %d %d %d\n" % (line.mtime, line.mtime_usec, line.atime, line.atime_usec)


def parse_line(raw: bytes) -> ControlLine:
    """Decode one control line (with or without its trailing newline).

    Raises :class:`ScpProtocolError` for anything malformed, including names a
    sink must never accept (``/``, ``..``). Reply bytes (``\\1``/``\\2``) are
    not control lines: use :func:`parse_reply` for those.
    """
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if len(raw) > MAX_LINE:
        raise ScpProtocolError("control line too long")
    if b"\n" in raw:
        raise ScpProtocolError("line break inside a control line")
    if raw == b"E":
        return EndDir()
    for regex, is_file in ((_FILE_RE, True), (_DIR_RE, False)):
        match = regex.match(raw)
        if match:
            mode = int(match.group(1), 8)
            size = int(match.group(2))
            name = check_name(match.group(3).decode("utf-8", "surrogateescape"))
            return FileLine(mode, size, name) if is_file else DirLine(mode, name)
    match = _TIMES_RE.match(raw)
    if match:
        mtime, mtime_usec, atime, atime_usec = (int(g) for g in match.groups())
        if mtime_usec > 999_999 or atime_usec > 999_999:
            raise ScpProtocolError("microseconds out of range")
        return TimesLine(mtime, atime, mtime_usec, atime_usec)
    raise ScpProtocolError("unknown control line")


def format_reply(reply: Reply) -> bytes:
    """Encode a reply; the message loses any line break it had."""
    if reply.kind is ReplyKind.OK:
        return OK
    text = reply.message.replace("\n", " ").replace("\r", " ")
    return bytes([reply.kind.value]) + text.encode("utf-8", "replace") + b"\n"


def parse_reply(raw: bytes) -> Reply:
    """Decode a reply: ``\\0`` alone, or ``\\1``/``\\2`` + text (+ newline)."""
    if raw == OK:
        return Reply(ReplyKind.OK)
    if raw[:1] in (b"\1", b"\2"):
        text = raw[1:]
        if text.endswith(b"\n"):
            text = text[:-1]
        if b"\n" in text:
            raise ScpProtocolError("line break inside a reply")
        kind = ReplyKind.WARNING if raw[:1] == b"\1" else ReplyKind.FATAL
        return Reply(kind, text.decode("utf-8", "replace"))
    raise ScpProtocolError("unexpected reply byte")
