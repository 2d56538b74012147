"""SIEM delivery: at-least-once, in order, from the journal, one cursor per sink.

Each sink reads the journal after its cursor and sends: RFC 5424 or CEF over
UDP (one datagram per event, best effort), TCP (RFC 6587 octet counting) or
TLS (RFC 5425). The cursor (``cursors/<name>.json`` in the journal folder)
advances only to events the peer's TCP stack has acknowledged (the socket's
unsent+unacked queue, SIOCOUTQ, is empty), so a SIEM that vanishes gets the
unacknowledged tail again after it returns: duplicates are possible and
carry the same seq, loss is not. While a SIEM is down, slow, blackholed or
presents a bad certificate, events simply wait in the journal; transfers
never wait for a sink.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import ssl
import termios
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from conduit.audit.events import Record
from conduit.audit.formats import cef, octet_counted, rfc5424
from conduit.audit.reader import JournalReader

if TYPE_CHECKING:
    from conduit.config.model import AuditConfig, SiemSink

log = logging.getLogger("conduit.audit.sinks")

CONNECT_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0
BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0
FILL_CHECK_INTERVAL = 10.0
BATCH = 500
#: Once caught up, a sink waits this long after being woken before it reads the
#: journal again, so the events of a burst (a tree of small files) go out as one
#: write rather than one each: sending per event cost a sequential client a
#: third of its files/s.
LINGER = 0.1


class JournalView(Protocol):
    """What a sink sees of the journal: its folder (read with its own
    :class:`JournalReader`) and the last sequence number written. A sink never
    writes the journal; its alerts go through an :data:`Alert`."""

    @property
    def directory(self) -> Path: ...

    @property
    def seq(self) -> int: ...


#: Records an ``audit.alert`` (outcome, reason) the way every event is recorded.
Alert = Callable[[str, str], Awaitable[object]]


def sink_name(conf: SiemSink) -> str:
    return conf.name or re.sub(r"[^A-Za-z0-9_.-]", "_", conf.target.replace("://", "-"))


def format_record(record: Record, fmt: str, line: bytes | None = None) -> bytes:
    if fmt == "cef":
        return cef(record).encode("utf-8")
    return rfc5424(record, line=line)


def framed(records: list[tuple[Record, bytes]], fmt: str) -> bytes:
    """``(record, line)`` pairs as one TCP/TLS stream: :func:`octet_counted` of each
    :func:`format_record`, in order, with each message copied once (into the stream)."""
    if fmt == "cef":
        return b"".join(octet_counted(format_record(r, fmt, line)) for r, line in records)
    parts: list[bytes] = []
    for record, line in records:
        message = rfc5424(record, line=line)
        parts += (b"%d " % len(message), message)
    return b"".join(parts)


def unacked_bytes(sock: socket.socket) -> int | None:
    """Bytes the kernel holds not yet acknowledged by the peer (Linux SIOCOUTQ)."""
    buf = array.array("i", [0])
    fd = sock.fileno()
    if fd < 0:
        return 1  # closed under us: nothing more will be acknowledged
    try:
        fcntl.ioctl(fd, termios.TIOCOUTQ, buf)
    except OSError:
        return None
    return buf[0]


class Sink:
    """One SIEM destination with its own cursor and delivery task."""

    def __init__(
        self,
        journal: JournalView,
        alert: Alert,
        conf: SiemSink,
        start: int,
        *,
        spool_alert_fill: float,
    ) -> None:
        self.journal = journal
        self._record_alert = alert
        self._spool_alert_fill = spool_alert_fill
        self.conf = conf
        self.name = sink_name(conf)
        self.scheme, _, rest = conf.target.partition("://")
        host, _, port = rest.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        directory = Path(journal.directory) / "cursors"
        directory.mkdir(parents=True, exist_ok=True)
        self.cursor_path = directory / f"{self.name}.json"
        self.cursor = self._load_cursor(start)
        # the writing journal's recall, when the sink runs beside it (not a Protocol
        # member: a sink reading a journal another process writes has none)
        self._recall = getattr(journal, "recall", None)
        self.reader = JournalReader(Path(journal.directory), self._recall)
        self._wake = asyncio.Event()
        self._stopping = False
        self._down = False
        self._fill_alerted = False
        self._next_fill_check = 0.0
        self._saved = self.cursor
        self._saved_at = 0.0
        self._unacked_since: float | None = None
        self.task = asyncio.create_task(self._run(), name=f"audit-sink-{self.name}")

    def _load_cursor(self, start: int) -> int:
        try:
            return int(json.loads(self.cursor_path.read_text())["seq"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            self._save(start)
            return start

    def _save(self, seq: int) -> None:
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        tmp.write_text(json.dumps({"seq": seq, "target": self.conf.target}))
        os.replace(tmp, self.cursor_path)
        self._saved = seq

    @property
    def backlog(self) -> int:
        return max(0, self.journal.seq - self.cursor)

    def notify(self) -> None:
        self._wake.set()

    async def stop(self, timeout: float) -> None:
        """Deliver what is pending for at most ``timeout`` seconds, then stop."""
        self._stopping = True
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.task)
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self._saved != self.cursor:
            self._save(self.cursor)

    # -- delivery loop ------------------------------------------------------------

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        while not (self._stopping and (self._down or self.backlog == 0)):
            try:
                await self._session()
                backoff = BACKOFF_MIN
            except Exception as exc:
                if not isinstance(exc, OSError | TimeoutError | ssl.SSLError):
                    log.exception("SIEM sink %s: unexpected error", self.name)
                await self._went_down(exc)
                if self._stopping:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._stopped()
                backoff = min(backoff * 2, BACKOFF_MAX)
            await self._check_fill()

    async def _stopped(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.05)

    async def _session(self) -> None:
        if self.scheme == "udp":
            await self._udp()
            return
        ctx = None
        if self.scheme == "tls":
            ctx = ssl.create_default_context(cafile=str(self.conf.ca) if self.conf.ca else None)
            if self.conf.cert:
                ctx.load_cert_chain(str(self.conf.cert), str(self.conf.key or self.conf.cert))
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=ctx, server_hostname=self.host if ctx else None
            )
        sock = writer.get_extra_info("socket")
        closed = asyncio.create_task(reader.read(1 << 16))  # any EOF/reset ends the session
        sent = self.cursor
        self._unacked_since = None
        try:
            await self._came_up()
            while True:
                self._wake.clear()  # before reading: a record written meanwhile wakes _idle
                records = await asyncio.to_thread(self.reader.read_lines_after, sent, BATCH)
                if records:
                    writer.write(framed(records, self.conf.format))
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await writer.drain()
                    sent = records[-1][0]["seq"]
                self._acked(sent, writer, sock)
                if closed.done():
                    if closed.cancelled() or closed.exception() or not closed.result():
                        raise ConnectionResetError("the SIEM closed the connection")
                    closed = asyncio.create_task(reader.read(1 << 16))
                if self._stopping and sent == self.journal.seq:
                    deadline = time.monotonic() + 1.0
                    while self.cursor != sent and time.monotonic() < deadline:
                        await asyncio.sleep(0.02)
                        self._acked(sent, writer, sock)
                    return
                if len(records) < BATCH:  # caught up: let the next burst gather
                    await self._idle(0.05 if self.cursor != sent else 1.0)
                await self._check_fill()
        finally:
            closed.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            self.reader = JournalReader(Path(self.journal.directory), self._recall)

    def _acked(self, sent: int, writer: asyncio.StreamWriter, sock: socket.socket | None) -> None:
        """Advance the cursor to ``sent`` once the peer acknowledged every byte."""
        if sent == self.cursor:
            return
        if writer.transport.get_write_buffer_size() or (
            sock is not None and unacked_bytes(sock) not in (0, None)
        ):
            now = time.monotonic()
            if self._unacked_since is None:
                self._unacked_since = now
            elif now - self._unacked_since > SEND_TIMEOUT:
                raise TimeoutError(f"no acknowledgement from the SIEM for {SEND_TIMEOUT:.0f} s")
            return
        self.cursor = sent
        self._unacked_since = None
        now = time.monotonic()
        if self._stopping or now - self._saved_at >= 0.5:
            self._save(sent)
            self._saved_at = now

    async def _udp(self) -> None:
        loop = asyncio.get_running_loop()
        errors: list[Exception] = []

        class Proto(asyncio.DatagramProtocol):
            def error_received(self, exc: Exception) -> None:
                errors.append(exc)

        transport, _ = await loop.create_datagram_endpoint(
            Proto, remote_addr=(self.host, self.port)
        )
        try:
            await self._came_up()
            while True:
                self._wake.clear()
                records = await asyncio.to_thread(self.reader.read_lines_after, self.cursor, BATCH)
                for record, line in records:
                    transport.sendto(self._frame(record, line))
                    self.cursor = record["seq"]
                if records:
                    self._save(self.cursor)
                if errors:
                    raise errors[0]
                if self._stopping and self.backlog == 0:
                    return
                if len(records) < BATCH:
                    await self._idle(1.0)
                await self._check_fill()
        finally:
            transport.close()

    async def _idle(self, timeout: float) -> None:
        """Wait until new records are signalled (at most ``timeout``), then linger
        so the rest of a burst joins them: one write per burst, not per event."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
            if not self._stopping:
                await asyncio.sleep(LINGER)

    def _frame(self, record: Record, line: bytes) -> bytes:
        return format_record(record, self.conf.format, line)

    # -- alerts ---------------------------------------------------------------------

    async def _alert(self, outcome: str, reason: str) -> None:
        if self._stopping:
            return
        try:
            await self._record_alert(outcome, reason)
        except Exception as exc:  # the journal's own failure is reported by the auditor
            log.warning("could not record sink alert: %s", exc)

    async def _went_down(self, exc: BaseException) -> None:
        log.warning("SIEM sink %s (%s): %s", self.name, self.conf.target, exc)
        self.reader = JournalReader(Path(self.journal.directory), self._recall)
        if not self._down:
            self._down = True
            await self._alert(
                "failed",
                f"SIEM sink {self.name} ({self.conf.target}) unreachable: "
                f"{exc.__class__.__name__}: {exc}; events wait in the journal",
            )

    async def _came_up(self) -> None:
        if self._down:
            self._down = False
            await self._alert(
                "success",
                f"SIEM sink {self.name} ({self.conf.target}) reachable again; "
                f"delivering {self.backlog} waiting event(s)",
            )

    async def _check_fill(self) -> None:
        now = time.monotonic()
        if now < self._next_fill_check:
            return
        self._next_fill_check = now + FILL_CHECK_INTERVAL
        fill = journal_fill(Path(self.journal.directory))
        threshold = self._spool_alert_fill
        if self.backlog and fill >= threshold and not self._fill_alerted:
            self._fill_alerted = True
            await self._alert(
                "failed",
                f"SIEM sink {self.name}: {self.backlog} event(s) waiting and the journal's "
                f"file system is {fill:.0%} full (alert at {threshold:.0%})",
            )
        elif fill < threshold or not self.backlog:
            self._fill_alerted = False


def journal_fill(directory: Path) -> float:
    """How full the journal's file system is (0..1): the spool for waiting events."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0.0
    if not st.f_blocks:
        return 0.0
    return 1.0 - st.f_bavail / st.f_blocks


def start_sinks(config: AuditConfig, journal: JournalView, alert: Alert, start: int) -> list[Sink]:
    """Start one delivery task per ``[[audit.siem]]``; a new sink starts at seq ``start``."""
    fill = config.spool_alert_fill
    return [Sink(journal, alert, conf, start, spool_alert_fill=fill) for conf in config.siem]
