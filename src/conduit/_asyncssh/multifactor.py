"""Several authentication methods for one login (RFC 4252 "partial success").

asyncssh's server completes a login as soon as any one method succeeds: a
proven public key sends USERAUTH_SUCCESS at once. OpenSSH's
``AuthenticationMethods publickey,keyboard-interactive`` instead answers the
proven key with USERAUTH_FAILURE, ``partial success = true``, and the
methods still to do. asyncssh has no such option, so every success goes
through the application first: each connection's ``send_userauth_success``
(the one place asyncssh's server auth handlers report success, through
``ServerAuth.send_success``) is wrapped, on that connection object only, to
ask ``decide(username, method)``:

* ``SUCCESS``: asyncssh completes the login as before;
* ``PARTIAL``: USERAUTH_FAILURE with partial success; the methods listed are
  whatever the application's ``*_auth_supported()`` callbacks now say
  (asyncssh computes them per request), so the application lists
  ``keyboard-interactive`` alone once it has recorded the key;
* ``FAILURE``: a plain USERAUTH_FAILURE (nothing is sent if the application
  closed the connection).

The wrapper passes the user name asyncssh is authenticating (the one the
proof was for) and the method of the handler reporting success, so the
application can bind the second step to the user of the first. A success
asyncssh reports with no method handler at all (``begin_auth`` returning
False: no authentication needed) comes as method ``"none"``.

Written for asyncssh 2.24.1 (see :data:`conduit._asyncssh.tuning.PINNED`); the
members relied on are in :data:`USES`, pinned by tests/test_tuning.py;
tests/gateway/test_totp.py fails if an upgrade makes this stale.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh import auth as _auth
from asyncssh.connection import SSHConnection, SSHServerConnection

SUCCESS = "success"
PARTIAL = "partial"
FAILURE = "failure"

#: (username, method) -> SUCCESS, PARTIAL or FAILURE.
Decide = Callable[[str, str], str]

#: Private members relied on: where success and failure are sent, where the
#: method name and user name are kept (``_method`` set in ``ServerAuth.__init__``,
#: ``_username``/``_auth`` in ``SSHConnection.__init__``), the handlers that
#: report success through ``send_success``, and the per-request method list.
USES: dict[str, Any] = {
    "SSHConnection.send_userauth_success": SSHConnection.send_userauth_success,
    "SSHConnection.send_userauth_failure": SSHConnection.send_userauth_failure,
    "SSHConnection._finish_userauth": SSHConnection._finish_userauth,
    "ServerAuth.__init__": _auth.ServerAuth.__init__,
    "ServerAuth.send_success": _auth.ServerAuth.send_success,
    "_ServerPublicKeyAuth._start": _auth._ServerPublicKeyAuth._start,
    "_ServerKbdIntAuth._send_challenge": _auth._ServerKbdIntAuth._send_challenge,
    "get_supported_server_auth_methods": _auth.get_supported_server_auth_methods,
    "SSHServerConnection.kbdint_auth_supported": SSHServerConnection.kbdint_auth_supported,
    "SSHServerConnection.public_key_auth_supported": (
        SSHServerConnection.public_key_auth_supported
    ),
}


def install(conn: asyncssh.SSHServerConnection, decide: Decide) -> None:
    """Route every authentication success on ``conn`` through ``decide``."""
    complete = conn.send_userauth_success  # bound: asyncssh's own

    async def send_userauth_success(self: Any) -> None:
        handler = self._auth
        method = getattr(handler, "_method", b"none")
        verdict = decide(self._username, method.decode("ascii", "backslashreplace"))
        if verdict == SUCCESS:
            await complete()
        elif self.is_closed():
            return
        else:
            self.send_userauth_failure(verdict == PARTIAL)

    # An instance attribute: asyncssh calls ``self._conn.send_userauth_success()``.
    setattr(conn, "send_userauth_success", types.MethodType(send_userauth_success, conn))  # noqa: B010
