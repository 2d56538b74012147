"""The legacy SCP (rcp) wire protocol, pure: the exec command, control lines, replies.

One codec for both ends Conduit speaks: the gateway's SCP server (``scp -t``/
``scp -f`` for ``scp -O`` clients) and the relay's SCP client (to devices with
no SFTP subsystem). It lives beside neither because both use it: storage must
not import the gateway, and the gateway should not reach into the relay. Bytes
in, values out, no I/O (as h11 does for HTTP), so every rule is tested by
tables and Hypothesis properties, and both protocol drivers stay thin.

The protocol, as OpenSSH's ``scp.c`` speaks it:

* ``C<mode> <size> <name>\\n`` announces a file, followed by ``size`` bytes
  and one status byte from the sender (``\\0``, or an error line);
* ``D<mode> <size> <name>\\n`` enters a directory, ``E\\n`` leaves it;
* ``T<mtime> <usec> <atime> <usec>\\n`` gives the times of the next ``C``/``D``;
* each step is answered by one reply: ``\\0`` ok, ``\\1<text>\\n`` an error
  for this step (the peer goes on with the next file), ``\\2<text>\\n`` fatal.

Strict where OpenSSH's ``sink()`` is strict, and stricter where its C
integer parsing is loose: digits are ASCII only (Python's ``int()`` would take
``²`` or Arabic-Indic digits), the mode is exactly four octal digits (no sign),
a size is at most 20 digits and ``2**63 - 1``, a time at most ``2**32 - 1``
(what an SFTP v3 device can be given, so no time is accepted here that a
backend cannot set later). Every failure is a :class:`ScpProtocolError` whose
text is OpenSSH's where it has one (``protocol error: bad mode``). A name
that breaks :mod:`conduit.names` is a :class:`ScpNameRefused`: the line was
well formed, only that entry is refused.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from conduit.names import BadName, check_name, escape

MAX_LINE = 8192
"""Longest control or reply line accepted (OpenSSH reads 2,047 bytes)."""
MAX_SIZE = 2**63 - 1
MAX_TIME = 2**32 - 1
MAX_MODE = 0o7777
OK = b"\0"
LINE_END = re.compile(rb"\A[^\n]{0,%d}+(?s:.)" % MAX_LINE)
"""For ``readuntil``: a line's end, or MAX_LINE + 1 bytes without one (too long).

Anchored and possessive, so searching a growing buffer stays linear and a
peer cannot make the reader hold an endless line.
"""

_SHELL_ONLY = ("`", "$", "\n", "\r", "\0")
_PUNCTUATION = ";&|<>()"


class ScpProtocolError(ValueError):
    """A command, control line or reply this side will not act on (fatal)."""


class ScpNameRefused(ScpProtocolError):
    """A well-formed ``C``/``D`` line whose name the name rule refuses."""

    def __init__(self, header: FileHeader, reason: str) -> None:
        super().__init__(reason)
        self.header = header
        self.reason = reason


# -- the exec command ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScpCommand:
    """``scp -t``/``scp -f`` as the client asked for it."""

    source: bool  # -f: this side sends files; -t: it receives them
    path: str
    recursive: bool = False
    preserve: bool = False
    must_be_dir: bool = False


def parse_command(command: str) -> ScpCommand:
    """Parse an exec request; anything but a plain ``scp -t|-f [flags] PATH`` is refused.

    A real ``sshd`` hands the command to a shell; the gateway has none, so
    any command a shell would have read differently (``;``, ``|``, ``$(...)``,
    backticks, redirections, newlines) is refused: what runs is then exactly
    what the client meant.
    """
    if any(ch in command for ch in _SHELL_ONLY):
        raise ScpProtocolError("shell syntax is not accepted")
    lexer = shlex.shlex(command, posix=True, punctuation_chars=_PUNCTUATION)
    lexer.whitespace_split = True
    try:
        argv = list(lexer)
    except ValueError:
        raise ScpProtocolError("unbalanced quotes") from None
    if any(token and set(token) <= set(_PUNCTUATION) for token in argv):
        raise ScpProtocolError("shell syntax is not accepted")
    if not argv or argv[0] != "scp":
        raise ScpProtocolError("only the scp and sftp services are offered")
    flags: set[str] = set()
    paths: list[str] = []
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "--":
            paths.extend(rest)
        elif arg.startswith("-") and len(arg) > 1 and not paths:
            for letter in arg[1:]:
                if letter not in "tfrpdv":
                    raise ScpProtocolError(f"unsupported scp option -{escape(letter)}")
                flags.add(letter)
        else:
            paths.append(arg)
    if ("t" in flags) == ("f" in flags):
        raise ScpProtocolError("exactly one of -t or -f is required")
    if len(paths) != 1:
        raise ScpProtocolError("exactly one path is required")
    return ScpCommand(
        source="f" in flags,
        path=paths[0],
        recursive="r" in flags,
        preserve="p" in flags,
        must_be_dir="d" in flags,
    )


# -- control lines -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileHeader:
    """``C0644 1234 name``: a file follows; ``D0755 0 name``: a directory opens."""

    directory: bool
    mode: int
    size: int
    name: str


@dataclass(frozen=True, slots=True)
class Times:
    """``T<mtime> <usec> <atime> <usec>``: times for the next file or directory."""

    mtime: int
    atime: int
    mtime_usec: int = 0
    atime_usec: int = 0


@dataclass(frozen=True, slots=True)
class EndDirectory:
    """``E``: the current directory is complete."""


@dataclass(frozen=True, slots=True)
class PeerError:
    """``\\x01msg`` (this step failed, go on) or ``\\x02msg`` (fatal)."""

    fatal: bool
    message: str


ControlLine = FileHeader | Times | EndDirectory | PeerError

_DIGITS = re.compile(rb"[0-9]+")
_MODE = re.compile(rb"[0-7]{4}")


def _error(why: str) -> ScpProtocolError:
    return ScpProtocolError(f"protocol error: {why}")


def _number(body: bytes, pos: int, what: str, limit: int, width: int) -> tuple[int, int]:
    """An ASCII decimal at ``body[pos:]`` ending before a space or the end; (value, end)."""
    match = _DIGITS.match(body, pos)
    if match is None:
        raise _error(f"{what} not present")
    digits = match.group()
    if len(digits) > width or int(digits) > limit:
        raise _error(f"{what} out of range")
    return int(digits), match.end()


def _delimited(body: bytes, pos: int, what: str, last: bool = False) -> int:
    if last:
        if pos != len(body):
            raise _error(f"{what} not delimited")
        return pos
    if body[pos : pos + 1] != b" ":
        raise _error(f"{what} not delimited")
    return pos + 1


def _times(body: bytes) -> Times:
    pos = 1
    values = []
    for field, last in (("mtime", False), ("atime", True)):
        seconds, pos = _number(body, pos, f"{field}.sec", MAX_TIME, 20)
        pos = _delimited(body, pos, f"{field}.sec")
        match = _DIGITS.match(body, pos)
        if match is None or len(match.group()) > 6 or int(match.group()) > 999_999:
            raise _error(f"{field}.usec not delimited")
        pos = _delimited(body, match.end(), f"{field}.usec", last)
        values += [seconds, int(match.group())]
    return Times(mtime=values[0], atime=values[2], mtime_usec=values[1], atime_usec=values[3])


def _header(body: bytes) -> FileHeader:
    if _MODE.match(body, 1) is None:
        raise _error("bad mode")
    mode = int(body[1:5], 8)
    pos = _delimited(body, 5, "mode")
    size, pos = _number(body, pos, "size", MAX_SIZE, 20)
    pos = _delimited(body, pos, "size")
    raw = body[pos:]
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = raw.decode("utf-8", "surrogateescape")
        header = FileHeader(body[:1] == b"D", mode, size, name)
        raise ScpNameRefused(header, "file names must be UTF-8") from None
    header = FileHeader(body[:1] == b"D", mode, size, name)
    if name in ("", ".", "..") or "/" in name:
        # What OpenSSH's sink says, and it stops there: a peer sending these
        # is trying to write outside the folder it was given.
        raise ScpProtocolError(f"error: unexpected filename: {name}")
    try:
        check_name(name)
    except BadName as exc:
        raise ScpNameRefused(header, str(exc)) from None
    return header


def parse_line(raw: bytes) -> ControlLine:
    """Parse one control line (its trailing newline optional)."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if len(raw) > MAX_LINE:
        raise _error("control line too long")
    if not raw:
        raise _error("unexpected <newline>")
    if b"\n" in raw:
        raise _error("line break inside a control line")
    kind = raw[:1]
    if kind in (b"\x01", b"\x02"):
        return PeerError(kind == b"\x02", raw[1:].decode("utf-8", "replace"))
    if raw == b"E":
        return EndDirectory()
    if kind == b"T":
        return _times(raw)
    if kind in (b"C", b"D"):
        return _header(raw)
    raise _error("expected control record")


def format_line(line: FileHeader | Times | EndDirectory) -> bytes:
    """Encode one control line with its newline; refuse what :func:`parse_line` would."""
    if isinstance(line, EndDirectory):
        return b"E\n"
    if isinstance(line, Times):
        if not (0 <= line.mtime <= MAX_TIME and 0 <= line.atime <= MAX_TIME):
            raise ScpProtocolError("times out of range")
        if not (0 <= line.mtime_usec <= 999_999 and 0 <= line.atime_usec <= 999_999):
            raise ScpProtocolError("times out of range")
        return b"T%d %d %d %d\n" % (line.mtime, line.mtime_usec, line.atime, line.atime_usec)
    if not 0 <= line.mode <= MAX_MODE:
        raise ScpProtocolError("mode out of range")
    if not 0 <= line.size <= MAX_SIZE:
        raise ScpProtocolError("size out of range")
    if line.name in ("", ".", "..") or "/" in line.name:
        raise ScpProtocolError("unexpected filename")
    try:
        check_name(line.name)
    except BadName as exc:
        raise ScpNameRefused(line, str(exc)) from None
    kind = b"D" if line.directory else b"C"
    return b"%s%04o %d %s\n" % (kind, line.mode, line.size, line.name.encode("utf-8"))


# -- replies ----------------------------------------------------------------------------


def error_line(message: str, *, fatal: bool = False) -> bytes:
    """An error reply for the peer: one line, every control character escaped."""
    clean = escape(message)[:1024]
    return (b"\x02" if fatal else b"\x01") + f"scp: {clean}\n".encode()


def parse_reply(raw: bytes) -> PeerError | None:
    """A reply: ``\\0`` alone (None: OK), or ``\\1``/``\\2`` with its text (newline optional)."""
    if raw == OK:
        return None
    if raw[:1] in (b"\x01", b"\x02"):
        text = raw[1:]
        if text.endswith(b"\n"):
            text = text[:-1]
        if len(text) > MAX_LINE:
            raise _error("reply too long")
        if b"\n" in text:
            raise _error("line break inside a reply")
        return PeerError(raw[:1] == b"\x02", text.decode("utf-8", "replace"))
    raise _error("unexpected reply byte")
