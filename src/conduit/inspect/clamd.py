"""The malware scan: ClamAV's ``clamd`` fed the upload while it arrives.

clamd's ``zINSTREAM`` command takes the file as chunks, each a 4-byte
big-endian length and that many bytes, ended by a zero-length chunk; the
reply is one NUL-terminated line: ``stream: OK``, ``stream: NAME FOUND`` or
``... ERROR``. :class:`ClamdStream` forwards every chunk as it arrives, so a
clean 1 GiB file is scanned during its upload, not read a second time after
it. Flow control is the socket's: ``feed`` returns once the chunk is in the
kernel's socket buffer, so a slow scanner slows the upload instead of
filling memory.

Anything but a clear answer fails closed: a refused connection, a timeout
(``[inspect.scan] timeout``, per step), a scanner that dies mid-stream or
answers garbage all give ``scan: scanner unavailable``. clamd refuses a
stream longer than its ``StreamMaxLength`` with ``INSTREAM size limit
exceeded``, which becomes ``scan: file larger than the scanner accepts``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conduit.inspect.base import State, Verdict

CHECK = "scan"
UNAVAILABLE = "scan: scanner unavailable"
TOO_LARGE = "scan: file larger than the scanner accepts"
MAX_REPLY = 4096  # a clamd reply is one short line; more is garbage
_FOUND = re.compile(r"stream: (?P<name>[\x21-\x7e]{1,200}) FOUND")


@dataclass(frozen=True, slots=True)
class Address:
    """Where clamd listens: a Unix socket path or a TCP host and port."""

    path: Path | None = None
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path is not None else f"tcp://{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """``unix:PATH`` or ``tcp://HOST:PORT`` (IPv6: ``tcp://[::1]:3310``); ValueError otherwise."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ValueError("unix: needs a socket path, e.g. unix:/run/clamav/clamd.ctl")
        return Address(path=Path(path))
    if text.startswith("tcp://"):
        host, sep, port = text[len("tcp://") :].rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be tcp://HOST:PORT, e.g. tcp://127.0.0.1:3310")
        return Address(host=host, port=int(port))
    raise ValueError("must be unix:PATH or tcp://HOST:PORT")


async def _connect(address: Address) -> socket.socket:
    """A connected non-blocking socket to clamd.

    A plain socket, not asyncio's streams: when clamd answers early (a size
    limit) and closes, the next send fails, and a stream transport would
    then close the socket and drop the reply still waiting in it.
    """
    loop = asyncio.get_running_loop()
    if address.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[Any, ...] = str(address.path)
    else:
        infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"cannot resolve {address.host}")
        family, kind, proto, _, target = infos[0]
        sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, target)
    except BaseException:
        sock.close()
        raise
    return sock


async def _read_reply(sock: socket.socket) -> bytes:
    """One NUL-terminated reply (or what came before EOF), at most MAX_REPLY bytes."""
    loop = asyncio.get_running_loop()
    data = b""
    while b"\0" not in data and len(data) <= MAX_REPLY:
        try:
            more = await loop.sock_recv(sock, MAX_REPLY + 1 - len(data))
        except OSError:
            break  # a reset after the reply still leaves the reply
        if not more:
            break
        data += more
    return data


def _printable(raw: bytes) -> str:
    """A reply for the journal: ASCII, control characters escaped, bounded."""
    return raw[:200].decode("ascii", "backslashreplace").encode("unicode_escape").decode("ascii")


def parse_reply(raw: bytes) -> tuple[State, str, str]:
    """clamd's INSTREAM answer as (state, client reason, journal detail)."""
    if not raw.endswith(b"\0") or b"\0" in raw[:-1]:
        return State.FAILED, UNAVAILABLE, f"clamd: incomplete reply {_printable(raw)!r}"
    try:
        text = raw[:-1].decode("ascii")
    except UnicodeDecodeError:
        return State.FAILED, UNAVAILABLE, f"clamd: unreadable reply {_printable(raw)!r}"
    if text == "stream: OK":
        return State.PASSED, "scan: clean", "clamd: stream: OK"
    found = _FOUND.fullmatch(text)
    if found:
        name = found["name"]
        return State.FAILED, f"scan: malware found ({name})", f"clamd: {text}"
    if text.endswith(" ERROR"):
        if "size limit exceeded" in text:
            return State.FAILED, TOO_LARGE, f"clamd: {text} (raise StreamMaxLength)"
        return State.FAILED, "scan: scanner error", f"clamd: {_printable(raw[:-1])}"
    return State.FAILED, UNAVAILABLE, f"clamd: unexpected reply {_printable(raw)!r}"


class ClamdStream:
    """One upload's scan: a clamd connection opened at the first chunk."""

    check = CHECK

    def __init__(self, address: Address, timeout: float) -> None:
        self._address = address
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._failed: Verdict | None = None
        # clamd may answer before the end (a size limit) and then close: the
        # reply is read as it comes, so a failed send cannot lose it
        self._reply: asyncio.Task[bytes] | None = None
        self._spent = 0.0  # seconds this check held the upload up
        self._sent = 0

    def _fail(self, reason: str, detail: str) -> Verdict:
        self._failed = Verdict(CHECK, State.FAILED, reason, detail)
        return self._failed

    async def _send(self, *parts: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self._sock is None:
            self._sock = await asyncio.wait_for(_connect(self._address), self._timeout)
            self._reply = asyncio.create_task(_read_reply(self._sock))
            parts = (b"zINSTREAM\0", *parts)
        if self._reply is not None and self._reply.done():
            raise ConnectionAbortedError("clamd answered before the end of the file")
        # Most chunks fit the socket's buffer: one non-blocking sendmsg, no
        # task or timer per chunk on the upload's path; the rest waits for room.
        try:
            sent = self._sock.sendmsg(parts)
        except BlockingIOError:
            sent = 0
        rest = b"".join(parts)[sent:] if sent < sum(map(len, parts)) else b""
        if rest:
            await asyncio.wait_for(loop.sock_sendall(self._sock, rest), self._timeout)

    async def _why_closed(self, exc: BaseException) -> None:
        """The scanner stopped taking bytes: its last words, if any, say why."""
        raw = b""
        if self._reply is not None:
            try:
                raw = await asyncio.wait_for(asyncio.shield(self._reply), min(self._timeout, 2.0))
            except (OSError, TimeoutError):
                raw = b""
        if raw.endswith(b"\0"):
            state, reason, detail = parse_reply(raw)
            if state is not State.PASSED:
                self._fail(reason, f"{detail} after {self._sent} bytes")
                return
        what = "timed out" if isinstance(exc, TimeoutError) else exc.__class__.__name__
        self._fail(UNAVAILABLE, f"clamd at {self._address}: {what} after {self._sent} bytes")

    async def feed(self, chunk: bytes) -> None:
        if self._failed is not None or not chunk:
            return  # an empty chunk would end clamd's stream early
        started = time.monotonic()
        try:
            await self._send(struct.pack(">I", len(chunk)), chunk)
            self._sent += len(chunk)
        except (OSError, TimeoutError) as exc:
            await self._why_closed(exc)
            self._close()
        finally:
            self._spent += time.monotonic() - started

    async def finish(self) -> Verdict:
        started = time.monotonic()
        try:
            verdict = self._failed or await self._finish()
        finally:
            self._close()
        spent = self._spent + time.monotonic() - started
        return Verdict(verdict.check, verdict.state, verdict.reason, verdict.detail, spent)

    async def _finish(self) -> Verdict:
        try:
            await self._send(struct.pack(">I", 0))
            assert self._reply is not None
            raw = await asyncio.wait_for(asyncio.shield(self._reply), self._timeout)
        except (OSError, TimeoutError) as exc:
            await self._why_closed(exc)
            assert self._failed is not None
            return self._failed
        state, reason, detail = parse_reply(raw)
        return Verdict(CHECK, state, reason, f"{detail} ({self._sent} bytes)")

    async def abort(self) -> None:
        self._close()

    async def identity(self) -> str:
        """What this scan's verdict depends on: clamd's ``VERSION`` (engine,
        and for official databases their version and date). OSError or
        TimeoutError when clamd does not answer: no verdict may be reused."""
        return f"clamd at {self._address}: {await version(self._address, self._timeout)}"

    def _close(self) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class Unconfigured:
    """``require = ["scan"]`` with no scanner configured: every upload fails closed."""

    check = CHECK

    async def feed(self, chunk: bytes) -> None:
        return None

    async def finish(self) -> Verdict:
        return Verdict(CHECK, State.FAILED, UNAVAILABLE, "no [inspect.scan] clamd configured")

    async def abort(self) -> None:
        return None


async def version(address: Address, timeout: float) -> str:
    """clamd's answer to ``VERSION``, e.g. ``ClamAV 1.4.6/27480/Wed Dec  2 ...``."""
    loop = asyncio.get_running_loop()
    sock = await asyncio.wait_for(_connect(address), timeout)
    try:
        await asyncio.wait_for(loop.sock_sendall(sock, b"zVERSION\0"), timeout)
        raw = await asyncio.wait_for(_read_reply(sock), timeout)
    finally:
        sock.close()
    if not raw.startswith(b"ClamAV ") or not raw.endswith(b"\0"):
        raise ConnectionError(f"clamd answered VERSION with {_printable(raw)!r}")
    return _printable(raw[:-1])


async def ping(address: Address, timeout: float) -> str | None:
    """None when clamd answers ``PONG``; otherwise why not (``conduit check`` warns)."""
    loop = asyncio.get_running_loop()
    try:
        sock = await asyncio.wait_for(_connect(address), timeout)
    except (OSError, TimeoutError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or repr(exc)
        return f"clamd at {address} is not reachable ({why})"
    try:
        await asyncio.wait_for(loop.sock_sendall(sock, b"zPING\0"), timeout)
        raw = await asyncio.wait_for(_read_reply(sock), timeout)
    except (OSError, TimeoutError) as exc:
        return f"clamd at {address} did not answer PING ({exc.__class__.__name__})"
    finally:
        sock.close()
    if raw != b"PONG\0":
        return f"clamd at {address} answered PING with {_printable(raw)!r}"
    return None
