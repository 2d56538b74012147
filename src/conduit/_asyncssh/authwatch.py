"""See every authentication attempt, not only public keys.

asyncssh answers a request for a method the server does not offer
(``none``, ``password``, ``keyboard-interactive``, ``hostbased``, GSSAPI)
itself, without telling the application: such attempts were neither counted
toward MaxAuthTries nor journalled. Offering ``password`` just to hear about
them would make clients prompt people for a password that can never work.
Instead, each connection's USERAUTH_REQUEST handler is wrapped (on that
connection object only) so the application hears of the attempt first, then
asyncssh refuses it as before. Written for asyncssh 2.24.1 (see
:data:`conduit._asyncssh.tuning.PINNED`); the members used are in :data:`USES`,
pinned by tests/test_tuning.py, and tests/gateway/test_auth_methods.py fails
if an upgrade makes it stale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_USERAUTH_REQUEST
from asyncssh.packet import PacketDecodeError, SSHPacket

#: Private members used here (``_auth_complete`` is set in ``SSHConnection.__init__``
#: and the dispatch table is pinned with kexinit's).
USES: dict[str, Any] = {
    "SSHConnection._process_userauth_request": SSHConnection._process_userauth_request,
}

#: Methods Conduit serves; asyncssh reports on these through SSHServer callbacks.
SERVED = frozenset({"publickey"})

#: (username, method) -> True to let asyncssh answer, False if the callee
#: already closed the connection.
OnAttempt = Callable[[str, str], bool]
#: (username, method) -> True if asyncssh will consult the application on it.
Served = Callable[[str, str], bool]


def _served(username: str, method: str) -> bool:
    return method in SERVED


def watch(
    conn: asyncssh.SSHServerConnection, on_attempt: OnAttempt, served: Served = _served
) -> None:
    """Call ``on_attempt`` for every request for a method not ``served``.

    ``served`` defaults to :data:`SERVED`; an application that offers a method
    only at some point (keyboard-interactive once a key is proven, see
    :mod:`.multifactor`) says which, per user, as it goes.
    """
    handlers: dict[int, Any] = dict(type(conn)._packet_handlers)
    original = handlers[MSG_USERAUTH_REQUEST]

    def userauth_request(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> Any:
        peek = SSHPacket(packet.get_remaining_payload())
        try:
            username = peek.get_string()
            peek.get_string()  # service
            method = peek.get_string()
        except PacketDecodeError:
            return original(self, pkttype, pktid, packet)  # asyncssh refuses it
        name = method.decode("ascii", "backslashreplace")
        if not self.is_client() and not self._auth_complete:
            user = username.decode("utf-8", "backslashreplace")
            if not served(user, name) and not on_attempt(user, name):
                return None
        return original(self, pkttype, pktid, packet)

    handlers[MSG_USERAUTH_REQUEST] = userauth_request
    conn._packet_handlers = handlers
