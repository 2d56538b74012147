"""Legacy SCP (rcp) protocol pieces, pure: the exec command and control lines.

A real ``sshd`` hands ``scp -t PATH`` to a shell. The gateway has no shell, so
it accepts only the exact shapes OpenSSH's ``scp -O`` sends and refuses any
command a shell would have read differently (``;``, ``|``, ``$(...)``,
backticks, redirections, newlines): what we run is then exactly what the
client meant, and nothing the client typed is ever interpreted.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

MAX_LINE = 8192
_SHELL_ONLY = ("`", "$", "\n", "\r", "\0")
_PUNCTUATION = ";&|<>()"


class ScpProtocolError(ValueError):
    """A command or control line this gateway will not act on."""


@dataclass(frozen=True, slots=True)
class ScpCommand:
    """``scp -t``/``scp -f`` as the client asked for it."""

    source: bool  # -f: the gateway sends files; -t: it receives them
    path: str
    recursive: bool = False
    preserve: bool = False
    must_be_dir: bool = False


def parse_command(command: str) -> ScpCommand:
    """Parse an exec request; anything but a plain ``scp -t|-f [flags] PATH`` is refused."""
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
                    raise ScpProtocolError(f"unsupported scp option -{letter}")
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


@dataclass(frozen=True, slots=True)
class FileHeader:
    """``C0644 1234 name``: a file follows; ``D0755 0 name``: a directory opens."""

    directory: bool
    mode: int
    size: int
    name: str


@dataclass(frozen=True, slots=True)
class Times:
    """``T<mtime> 0 <atime> 0``: times for the next file or directory."""

    mtime: int
    atime: int


@dataclass(frozen=True, slots=True)
class EndDirectory:
    """``E``: the current directory is complete."""


@dataclass(frozen=True, slots=True)
class PeerError:
    """``\\x01msg`` (a warning, go on) or ``\\x02msg`` (fatal)."""

    fatal: bool
    message: str


ControlLine = FileHeader | Times | EndDirectory | PeerError


def check_name(name: str) -> str:
    """A name from a ``C``/``D`` line must be one plain component."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ScpProtocolError("invalid file name")
    return name


def parse_line(line: bytes) -> ControlLine:
    """Parse one control line (without its trailing newline)."""
    if not line:
        raise ScpProtocolError("empty control line")
    kind, body = line[:1], line[1:]
    if kind in (b"\x01", b"\x02"):
        return PeerError(kind == b"\x02", body.decode("utf-8", "replace"))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ScpProtocolError("file names must be UTF-8") from None
    if kind == b"E":
        if text:
            raise ScpProtocolError("malformed E line")
        return EndDirectory()
    if kind == b"T":
        fields = text.split(" ")
        if len(fields) != 4 or not all(f.isdigit() for f in fields):
            raise ScpProtocolError("malformed T line")
        return Times(mtime=int(fields[0]), atime=int(fields[2]))
    if kind in (b"C", b"D"):
        mode, sep1, rest = text.partition(" ")
        size, sep2, name = rest.partition(" ")
        if not (sep1 and sep2 and len(mode) == 4 and size.isdigit()):
            raise ScpProtocolError(f"malformed {kind.decode()} line")
        try:
            mode_value = int(mode, 8)
        except ValueError:
            raise ScpProtocolError("malformed mode") from None
        return FileHeader(kind == b"D", mode_value & 0o7777, int(size), check_name(name))
    raise ScpProtocolError("unknown control line")


def file_line(header: FileHeader) -> bytes:
    kind = "D" if header.directory else "C"
    if "\n" in header.name:
        raise ScpProtocolError("file names with a newline cannot be sent over SCP")
    return f"{kind}{header.mode & 0o7777:04o} {header.size} {header.name}\n".encode()


def times_line(times: Times) -> bytes:
    return f"T{times.mtime} 0 {times.atime} 0\n".encode()


def error_line(message: str, *, fatal: bool = False) -> bytes:
    """An error for the peer, one line whatever the message holds."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in message)[:512]
    return (b"\x02" if fatal else b"\x01") + f"scp: {clean}\n".encode()
