"""The legacy SCP server (``scp -O``): sink (``-t``) and source (``-f``).

Written here rather than taken from asyncssh because an SCP upload must be
committed only after its last byte *and* the client's final OK have arrived:
a client killed mid-file leaves nothing under the final name. Every file goes
through the same :class:`Operations` as SFTP.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from datetime import datetime
from typing import Protocol

from conduit.config.model import Op
from conduit.errors import Fault, StorageError
from conduit.gateway.guard import moment, same_moment
from conduit.gateway.operations import Operations
from conduit.gateway.vfs import BadPath, VirtualPath, resolve
from conduit.policy import Policy
from conduit.scpcodec import (
    LINE_END,
    MAX_LINE,
    MAX_TIME,
    EndDirectory,
    FileHeader,
    PeerError,
    ScpCommand,
    ScpNameRefused,
    ScpProtocolError,
    Times,
    error_line,
    format_line,
    parse_line,
    parse_reply,
)
from conduit.storage.base import Stat
from conduit.transfer import Upload

log = logging.getLogger("conduit.gateway.scp")

CHUNK = 255 * 1024
OK = b"\0"
NO_FINAL_STATUS = "client closed without its final status byte after every declared byte"


def _clamp_time(value: float) -> int:
    """A file's time as a ``T`` line may carry it (0 to 2**32 - 1, what the codec
    accepts back): a file dated before 1970 or after 2106 gets the nearest time."""
    return max(0, min(MAX_TIME, int(value)))


class ByteReader(Protocol):
    """The client's bytes (an asyncssh ``SSHReader[bytes]`` on the session channel)."""

    async def read(self, n: int = -1) -> bytes: ...

    async def readuntil(
        self, separator: bytes | re.Pattern[bytes], max_separator_len: int = 0
    ) -> bytes: ...


class ByteWriter(Protocol):
    """Bytes to the client (an asyncssh ``SSHWriter[bytes]``); ``drain`` waits for room."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class _Abort(Exception):
    """The peer went away or broke the protocol: stop, commit nothing."""


def interruption(exc: BaseException) -> str:
    """Why a transfer stopped, in words for the journal and the console.

    The record is read by operators and auditors: an exception's class name
    (``_Abort``, ``IncompleteReadError``) tells them nothing and leaks how the
    code is built. What the peer said (a fatal error line) is kept: it is the
    client's own explanation, escaped wherever it is shown.
    """
    if isinstance(exc, _Abort):
        reason = str(exc)
    elif isinstance(exc, asyncio.IncompleteReadError | ConnectionError | EOFError):
        reason = "connection lost"
    elif isinstance(exc, asyncio.CancelledError):
        reason = "session ended"
    elif isinstance(exc, StorageError):
        reason = exc.detail
    else:
        reason = "internal error"  # the details are in the server log
    return f"transfer interrupted: {reason}"


class ScpServer:
    def __init__(
        self, ops: Operations, command: ScpCommand, reader: ByteReader, writer: ByteWriter
    ) -> None:
        self.ops = ops
        self.command = command
        self.reader = reader
        self.writer = writer
        self.errors = 0
        # Folders of the tree being received that were folders when last asked,
        # and under which policy and minute: see _is_dir.
        self._dirs: dict[VirtualPath, tuple[Policy, datetime]] = {}

    async def run(self) -> int:
        try:
            target = resolve(self.command.path)
        except BadPath as exc:
            # The path in the command itself breaks the name rule.
            self._warn(f"file name not allowed: {exc}", fatal=True)
            await self._record_refusal(f"file name not allowed: {exc}")
            return 1
        try:
            if self.command.source:
                await self._source(target)
            else:
                await self._sink(target)
        except StorageError as exc:
            self._warn(exc.reason, fatal=True)
        except ScpProtocolError as exc:
            self._warn(str(exc), fatal=True)
            await self._record_refusal(str(exc))
        except (_Abort, asyncio.IncompleteReadError, ConnectionError, BrokenPipeError):
            self.errors += 1
        except Exception:
            # A bug or an unexpected backend failure: tell the client plainly,
            # keep the details (which may hold real paths) in the server log.
            log.exception("scp session %s failed", self.ops.session.id)
            self._warn("internal error", fatal=True)
        return 1 if self.errors else 0

    # -- plumbing --------------------------------------------------------------------

    async def _record_refusal(self, reason: str) -> None:
        # The client already has its answer; a journal that cannot take this
        # record has stopped transfers anyway (closed mode), so nothing is lost
        # by not raising here.
        operation = "scp -f" if self.command.source else "scp -t"
        try:
            await self.ops.refuse(operation, self.command.path, reason)
        except StorageError:
            log.warning("scp session %s: refusal not recorded", self.ops.session.id)

    def _warn(self, message: str, *, fatal: bool = False) -> None:
        self.errors += 1
        self.writer.write(error_line(message, fatal=fatal))

    async def _line(self) -> bytes | None:
        try:
            line: bytes = await self.reader.readuntil(LINE_END, MAX_LINE + 1)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise _Abort("connection closed mid-line") from None
            return None
        if not line.endswith(b"\n"):
            raise ScpProtocolError("protocol error: control line too long")
        return line[:-1]

    async def _ack(self, first: bytes | None = None) -> None:
        """Wait for the peer's reply to what we sent: OK, a warning, or fatal."""
        reply = first if first is not None else await self.reader.read(1)
        if reply == OK:
            return
        if not reply:
            raise _Abort("connection closed")
        rest = await self._line() if reply in (b"\x01", b"\x02") else b""
        message = parse_reply(reply + (rest or b""))
        if isinstance(message, PeerError) and not message.fatal:
            raise StorageError(Fault.FAILURE, message.message)
        raise _Abort(str(message))

    # -- sink: the client sends files ----------------------------------------------------

    async def _sink(self, target: VirtualPath) -> None:
        if not await self._is_dir(target):
            if self.command.must_be_dir:
                raise StorageError(Fault.NOT_A_DIRECTORY, "target is not a directory")
            # A single file named by the target: refuse now, not after the
            # client has sent it, if it could never be written there.
            await self.ops.authorize(Op.WRITE, target)
            if len(target.parts) < 2 or not await self._is_dir(target.parent):
                raise StorageError(Fault.NOT_FOUND, "no such directory")
        stack = [target]
        times: Times | None = None
        self.writer.write(OK)
        while (raw := await self._line()) is not None:
            try:
                line = parse_line(raw)
            except ScpNameRefused as exc:
                # A well-formed line with a name the rule refuses: this entry
                # only. The client skips the file's data (or the whole folder)
                # on a \x01 reply, as OpenSSH's scp does.
                times = None
                await self._refuse_name(exc.header, stack[-1], exc.reason)
                continue
            if isinstance(line, PeerError):
                self.errors += 1
                if line.fatal:
                    return
                continue
            if isinstance(line, Times):
                times = line
                self.writer.write(OK)
                continue
            if isinstance(line, EndDirectory):
                if len(stack) == 1:
                    raise ScpProtocolError("E without a directory")
                self._dirs.pop(stack.pop(), None)  # kept for the open folders only
                self.writer.write(OK)
                continue
            here = stack[-1]
            try:
                dest = here.child(line.name) if await self._is_dir(here, known=True) else here
            except BadPath as exc:  # a folder nested past the path limit
                times = None
                await self._refuse_name(line, here, str(exc))
                continue
            try:
                if line.directory:
                    await self._recv_dir(dest, line, times)
                    stack.append(dest)
                    self.writer.write(OK)
                else:
                    await self._recv_file(dest, line, times)
            except StorageError as exc:
                self._warn(f"{line.name}: {exc.reason}")
            times = None

    async def _refuse_name(self, header: FileHeader, here: VirtualPath, reason: str) -> None:
        """Refuse one entry whose name breaks the rule: journal it, then tell the client."""
        op = Op.MKDIR if header.directory else Op.WRITE
        why = f"file name not allowed: {reason}"
        await self.ops.refuse(str(op), f"{here.text.rstrip('/')}/{header.name}", why)
        self._warn(f"{header.name}: {why}")

    async def _is_dir(self, path: VirtualPath, *, known: bool = False) -> bool:
        """Is ``path`` a folder the client may put things into?

        ``known``: the answer may come from the last time it was asked, when
        that was under the same policy object and in the same minute (what a
        decision can depend on: a reload swaps the object, a window has minute
        resolution). A tree's every file asked this of its folder, a stat with
        its policy questions each time. What is not asked again is only
        whether the name still leads to a folder; the file's own write
        resolves it again, component by component, and a folder renamed or
        swapped for a link since is refused there, not written beside it.
        """
        now = moment(self.ops.site.policy)
        if known:
            last = self._dirs.get(path)
            if last is not None and same_moment(last, now):
                self.ops.served()  # a revoked session is served nothing, asked or not
                return True
        try:
            found = (await self.ops.stat(path)).is_dir
        except StorageError as exc:
            # "Not there" answers the question; a refusal or a device that
            # cannot be reached must reach the client as itself.
            if exc.fault in (Fault.NOT_FOUND, Fault.NOT_A_DIRECTORY):
                found = False
            else:
                raise
        if found:
            self._dirs[path] = now
        else:
            self._dirs.pop(path, None)
        return found

    async def _recv_dir(self, dest: VirtualPath, header: FileHeader, times: Times | None) -> None:
        if not self.command.recursive:
            raise ScpProtocolError("directory sent without -r")
        if not await self._is_dir(dest):
            now = moment(self.ops.site.policy)
            await self.ops.mkdir(dest, header.mode)
            self._dirs[dest] = now  # made just now: its files need not ask again
        if times and self.command.preserve:
            await self.ops.set_times(dest, times.atime, times.mtime)

    async def _recv_file(self, dest: VirtualPath, header: FileHeader, times: Times | None) -> None:
        try:
            upload: Upload | None = await self.ops.open_write(
                dest, size=header.size, mode=header.mode
            )
        except StorageError as exc:
            # Refuse before the data flows: the client skips this file.
            self._warn(f"{header.name}: {exc.reason}")
            return
        assert upload is not None
        self.writer.write(OK)
        failure: StorageError | None = None
        remaining, offset = header.size, 0
        try:
            while remaining:
                data = await self.reader.read(min(remaining, CHUNK))
                if not data:
                    raise _Abort("connection closed mid-file")
                if failure is None:
                    try:
                        await upload.write(offset, data)
                    except StorageError as exc:
                        failure = exc
                        await upload.abort(exc.detail)
                offset += len(data)
                remaining -= len(data)
            status = await self.reader.read(1)
            if status:
                await self._ack(status)
            elif failure is None:
                # Every declared byte arrived, then the client closed its side
                # without the status byte. OpenSSH's sink keeps such a file
                # and clients report success to their user: commit, and say
                # in the record that the status was missing.
                self.ops.note(upload.transfer, NO_FINAL_STATUS)
        except BaseException as exc:
            await upload.abort(interruption(exc))
            raise
        if failure is not None:
            raise failure
        if times and self.command.preserve:
            upload.times = (float(times.atime), float(times.mtime))
        await upload.commit()
        if upload.times is not None:
            await self.ops.set_times(dest, *upload.times, upload=upload)
        self.writer.write(OK)

    # -- source: the client fetches files --------------------------------------------------

    async def _source(self, target: VirtualPath) -> None:
        await self._ack()
        for path in await self._expand(target):
            try:
                await self._send(path)
            except StorageError as exc:
                self._warn(f"{path.name}: {exc.reason}")

    async def _expand(self, target: VirtualPath) -> list[VirtualPath]:
        """A shell would expand ``*.log``; do the same, inside the virtual root."""
        if not any(ch in target.name for ch in "*?[") or target.is_root:
            return [target]
        try:
            await self.ops.stat(target)
            return [target]
        except StorageError:
            pass
        entries = await self.ops.listdir(target.parent)
        matches = sorted(e.name for e in entries if fnmatch.fnmatchcase(e.name, target.name))
        if not matches:
            raise StorageError(Fault.NOT_FOUND, "no match")
        return [target.parent.child(name) for name in matches]

    async def _send(self, path: VirtualPath, listed: Stat | None = None) -> None:
        """``listed``: what the folder's listing said of ``path``. A file listed
        is not stat'ed again (a policy question and a confined resolution):
        its header's size is the opened file's, and the open asks the policy
        and resolves the name itself, so what changed since the listing (a
        folder now, a link leaving the area, a refusal) is refused there.
        Folders, and times for ``-p``, are still looked up afresh."""
        if listed is not None and listed.is_file and not self.command.preserve:
            st = listed
        else:
            st = await self.ops.stat(path)
        if self.command.preserve:
            self.writer.write(format_line(Times(_clamp_time(st.mtime), _clamp_time(st.atime))))
            await self._ack()
        if st.is_dir:
            if not self.command.recursive:
                raise StorageError(Fault.IS_A_DIRECTORY, "not a regular file")
            self.writer.write(format_line(FileHeader(True, st.mode & 0o777, 0, path.name)))
            await self._ack()
            for entry in await self.ops.listdir(path):
                try:
                    await self._send(path.child(entry.name), entry.stat)
                except StorageError as exc:
                    self._warn(f"{entry.name}: {exc.reason}")
            self.writer.write(b"E\n")
            await self._ack()
            return
        download = await self.ops.open_read(path)
        error: str | None = "transfer interrupted"
        try:
            size = download.size
            self.writer.write(format_line(FileHeader(False, st.mode & 0o777, size, path.name)))
            await self._ack()
            offset = 0
            while offset < size:
                data = await download.read(offset, min(CHUNK, size - offset))
                if not data:
                    # The size is already promised in the C line: the stream
                    # cannot be repaired, only ended.
                    raise _Abort("file shrank while being sent")
                self.writer.write(data)
                await self.writer.drain()
                offset += len(data)
            error = None
        except BaseException as exc:
            error = interruption(exc)
            raise
        finally:
            # The download's record is written before the client hears the
            # file is complete, as for an SFTP CLOSE; if it cannot be, the
            # client gets the refusal instead of the closing OK.
            await download.close(error)
        self.writer.write(OK)
        await self._ack()
