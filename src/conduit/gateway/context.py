"""What one session's :class:`~conduit.gateway.operations.Operations` works in:
the running gateway as a session sees it (:class:`Site`), who is on the
other end (:class:`SessionInfo`), and what the connection has moved
(:class:`Traffic`). Kept apart from operations.py so that the guard, the
server and the app can name them without importing the operations.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Protocol

from conduit.config.model import Op
from conduit.policy import Policy
from conduit.storage.base import Backend
from conduit.transfer import Download, Upload


class Recorder(Protocol):
    """Where events go (the audit journal); awaited before the client hears success."""

    async def record(
        self, type: str, outcome: str, *, durable: bool = True, hold: bool = False, **fields: Any
    ) -> object: ...


class Site(Protocol):
    """What a session needs from the running gateway; re-read on every operation
    so that a policy reload applies to open sessions from their next request."""

    @property
    def policy(self) -> Policy: ...

    @property
    def areas(self) -> Mapping[str, Backend]: ...

    @property
    def devices(self) -> Mapping[str, Backend]: ...

    @property
    def recorder(self) -> Recorder: ...


@dataclass(slots=True)
class Traffic:
    """What a connection has moved so far (for ``session.end`` and the idle timeout)."""

    transfers_open: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: Why a policy reload revoked this connection (then nothing of it commits).
    revoked: str | None = None
    #: Open transfers by id: what a reload asks the new policy about again.
    transfers: dict[str, tuple[Op, str, Upload | Download]] = field(default_factory=dict)

    def open_transfers(self) -> Iterator[tuple[Op, str, int | None]]:
        """(operation, virtual path, bytes so far or file size) of each open transfer."""
        for op, path, transfer in list(self.transfers.values()):
            yield op, path, transfer.size if isinstance(transfer, Download) else transfer.bytes


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Who is on the other end of one SSH session."""

    id: str
    user: str
    source: IPv4Address | IPv6Address
    zone: str | None
    protocol: str
