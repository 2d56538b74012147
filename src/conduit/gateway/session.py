"""One SSH channel of an authenticated connection: the SFTP subsystem or an
``scp -t|-f`` exec, nothing else.

A shell, another command or another subsystem is accepted at the SSH layer
and refused in :meth:`Session.session_started`, so the refusal is journalled
(``access.denied``) before the client hears it, as a readable line. The
connection it belongs to (authentication, limits) is
:class:`conduit.gateway.server.Connection`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

from conduit._asyncssh.channel import binary_channel, channel
from conduit._asyncssh.sendlane import HandOverWriter
from conduit.gateway.context import SessionInfo
from conduit.gateway.operations import Operations
from conduit.gateway.resources import HandleQuota
from conduit.gateway.scp import ScpServer
from conduit.gateway.sftp import MAX_QUEUED_REPLIES, GatewaySFTPHandler, GatewaySFTPServer
from conduit.scpcodec import ScpProtocolError, parse_command
from conduit.transfer.budget import ReorderBudget

if TYPE_CHECKING:
    from conduit.gateway.server import Connection


class Session(SSHServerStreamSession[bytes]):
    """One channel: the SFTP subsystem or an ``scp`` exec; no shell, no pty."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(None)
        self.connection = connection
        self.closed = False

    def _operations(self, protocol: str) -> Operations:
        c = self.connection
        assert c.user is not None
        info = SessionInfo(c.id, c.user, c.source, c.zone, protocol)
        limit = int(c.gateway.config.gateway.limits.max_reorder_per_session)
        reorder = ReorderBudget(limit, c.gateway.counters.reorder)
        return Operations(c.gateway, info, c.traffic, reorder)

    def _quota(self) -> HandleQuota:
        c = self.connection
        assert c.user is not None
        limits = c.gateway.config.gateway.limits
        return HandleQuota(
            c.user,
            c.gateway.counters.handles_per_user,
            per_session_cap=limits.max_handles_per_session,
            per_user_cap=limits.max_handles_per_user,
            descriptors=c.gateway.counters.descriptors,
        )

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.connection.last_activity = time.monotonic()
        super().data_received(data, datatype)

    def pty_requested(self, *args: Any) -> bool:
        return False

    # Shell, exec and subsystem requests are all accepted at the SSH layer and
    # refused in session_started: the refusal is then recorded before the
    # client hears it, and the client gets a readable line instead of a bare
    # "request failed".

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return True

    async def _refuse(self, chan: asyncssh.SSHServerChannel[bytes], what: str, reason: str) -> None:
        c = self.connection
        try:
            await c.gateway.recorder.record(
                "access.denied",
                "denied",
                principal=c.user,
                source=str(c.source),
                zone=c.zone,
                session=c.id,
                operation="exec",
                path=what[:1024],
                reason=reason,
            )
        finally:
            chan.write_stderr(
                f"conduit: {reason}. This gateway offers scp and sftp only.\r\n".encode()
            )
            chan.exit(1)

    def session_started(self) -> None:
        chan = binary_channel(self)
        reader = SSHReader[bytes](self, chan)
        writer = SSHWriter[bytes](self, chan)
        command = chan.get_command()
        gateway = self.connection.gateway
        subsystem = chan.get_subsystem()
        if subsystem == "sftp":
            server = GatewaySFTPServer(
                chan, self._operations("sftp"), self._drain_replies, self._quota()
            )
            handler = GatewaySFTPHandler(server, reader, writer, 3)
            gateway.spawn(handler.run())
        elif subsystem:
            gateway.spawn(self._refuse(chan, f"(subsystem {subsystem})", "no such subsystem"))
        elif command is None:
            gateway.spawn(self._refuse(chan, "(shell)", "no shell on this gateway"))
        else:
            try:
                parsed = parse_command(command)
            except ScpProtocolError as exc:
                gateway.spawn(self._refuse(chan, command, str(exc)))
                return
            # A download's chunks are queued on the channel without a copy.
            scp = ScpServer(self._operations("scp"), parsed, reader, HandOverWriter(writer))
            gateway.spawn(self._run_scp(scp, chan))

    async def _drain_replies(self) -> None:
        if channel(self).get_write_buffer_size() > MAX_QUEUED_REPLIES:
            await self.drain(None)

    async def _run_scp(self, scp: ScpServer, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        status = 1
        try:
            status = await scp.run()
        finally:
            chan.exit(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.connection.session_closed()
        super().connection_lost(exc)
