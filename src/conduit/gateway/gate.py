"""The listening socket: refuse a flood before asyncssh spends anything on it.

asyncssh builds a full connection object (options, timers, loggers) for every
accepted socket before the application hears of it: ~0.5 ms of CPU each,
which is what a flood of new connections costs the gateway. This listener
(handed to ``asyncssh.listen`` as its ``tunnel``, the documented way to give
it a listener of one's own) asks :mod:`conduit.gateway.admission` first, at
accept time, and closes a refused socket without asyncssh ever seeing it.
An admitted socket is handed to a fresh asyncssh connection unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

#: Accepted-but-not-yet-served connections the kernel may queue. asyncio's
#: default (100) overflows under a burst and the kernel then drops SYNs,
#: which delays real clients by a second per retry.
BACKLOG = 1024


class Ticket:
    """An admitted socket, waiting for its login (a :class:`Waiting`)."""

    __slots__ = ("claimed", "dropped", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.claimed = False
        self.dropped = False  # by the gateway (evicted): not the client's doing

    def drop(self) -> None:
        self.dropped = True
        self.transport.abort()  # asyncssh hears connection_lost as for any reset


#: (ticket, peername) -> admitted?
Admit = Callable[[Ticket, Any], bool]


class Listener:
    """A listener for ``asyncssh.listen(tunnel=...)`` that admits before asyncssh."""

    def __init__(self, admit: Admit, release: Callable[[Ticket], None]) -> None:
        self._admit = admit
        self._release = release
        #: The ticket of the connection asyncssh is setting up right now: the
        #: gateway's Connection claims it from its connection_made, which
        #: asyncssh calls synchronously inside ours.
        self.admitting: Ticket | None = None

    def __bool__(self) -> bool:
        return True

    async def create_server(
        self, session_factory: Callable[[str, int], Any], host: str, port: int
    ) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: _Gate(self, session_factory),
            host or None,
            port,
            reuse_address=True,
            backlog=BACKLOG,
        )

    def hand_over(
        self,
        transport: asyncio.Transport,
        factory: Callable[[str, int], Any],
        ticket: Ticket | None = None,
    ) -> None:
        """Admit ``transport`` and give it to a new asyncssh connection, or close it.

        ``ticket``: already admitted elsewhere (a worker process serving a socket
        its supervisor admitted, see workers.py); then not asked again here.
        """
        if ticket is None:
            ticket = Ticket(transport)
            if not self._admit(ticket, transport.get_extra_info("peername")):
                transport.abort()
                return
        self.admitting = ticket
        try:
            conn = factory("", 0)
            transport.set_protocol(conn)
            conn.connection_made(transport)
        except Exception:
            transport.abort()
            raise  # asyncio logs it; the socket is closed either way
        finally:
            self.admitting = None
            if not ticket.claimed:  # asyncssh failed before our Connection saw it
                self._release(ticket)


class _Gate(asyncio.Protocol):
    """The protocol of a socket until it is admitted or refused."""

    def __init__(self, listener: Listener, factory: Callable[[str, int], Any]) -> None:
        self._listener = listener
        self._factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._listener.hand_over(transport, self._factory)
