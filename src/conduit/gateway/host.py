"""What a client connection needs from the gateway that accepted it.

:class:`~conduit.gateway.server.Connection` depends on this, not on the whole
:class:`~conduit.gateway.app.Gateway`: the site its sessions consult (policy,
areas, devices, recorder), the limits and their counters, the login facts and
the noise log. The gateway is one such host; a test may bring a smaller one.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from conduit.gateway.context import Site

if TYPE_CHECKING:
    from conduit.audit.noise import NoiseLog
    from conduit.auth.identity import Identity
    from conduit.auth.totp import Verifier
    from conduit.config import Config
    from conduit.gateway.defending import Defence
    from conduit.gateway.gate import Listener
    from conduit.gateway.server import Connection, Counters


class ConnectionHost(Site, Protocol):
    """The running gateway as a connection sees it (re-read on every use, so a
    policy reload applies to connections already open)."""

    @property
    def config(self) -> Config: ...

    @property
    def gate(self) -> Listener: ...

    @property
    def counters(self) -> Counters: ...

    @property
    def noise(self) -> NoiseLog: ...

    @property
    def defence(self) -> Defence: ...

    @property
    def connections(self) -> set[Connection]:
        """Authenticated connections (what a reload may revoke)."""
        ...

    def auditor_available(self) -> bool: ...

    @property
    def identity(self) -> Identity:
        """Who may log in (keys, CAs, revocation), as the policy in force says."""
        ...

    def totp(self) -> Verifier:
        """The second factor's secrets and replay marks."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...
