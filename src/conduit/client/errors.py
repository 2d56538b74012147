"""The client's one error: a short sentence a person can act on, never a traceback.

Everything that goes wrong in a copy (a host that does not answer, a host key
that does not match, a refused login, a missing remote file, a local folder
that cannot be written) becomes a :class:`ClientError` whose message names
the place (``host:path`` or a local path) and the reason in one line.
:func:`describe` maps asyncssh's and the OS's exceptions to those lines, so
``conduit cp`` and the fleet print the same words.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import asyncssh

from conduit.names import escape


class ClientError(Exception):
    """A copy or connection that failed; ``str()`` is one line for a person.

    ``retryable`` is False when trying again cannot help (a host key that does
    not match, a refused login, an unusable key): a fleet does not retry those.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class RemoteMismatch(ClientError):
    """The far side's bytes do not hash to what was sent or expected."""


_SFTP_WORDS: dict[type[asyncssh.SFTPError], str] = {
    asyncssh.SFTPNoSuchFile: "no such file or folder",
    asyncssh.SFTPNoSuchPath: "no such file or folder",
    asyncssh.SFTPPermissionDenied: "permission denied",
    asyncssh.SFTPWriteProtect: "permission denied (write protected)",
    asyncssh.SFTPNoSpaceOnFilesystem: "no space left on the far side",
    asyncssh.SFTPQuotaExceeded: "quota exceeded on the far side",
    asyncssh.SFTPFileIsADirectory: "is a folder (use -r)",
    asyncssh.SFTPNotADirectory: "not a folder",
}


def shown(exc: BaseException) -> str:
    """``exc``'s message for a terminal: each line escaped (a far file name may hold ESC)."""
    return "\n".join(escape(line) for line in str(exc).splitlines())


FINAL = (asyncssh.HostKeyNotVerifiable, asyncssh.PermissionDenied, asyncssh.KeyImportError)
"""Connection failures a retry cannot cure."""


def describe(exc: BaseException, where: str) -> str:
    """One line for ``exc`` that happened at ``where`` (``host``, ``host:path`` or a path).

    Raw text (paths and server messages as they are): whoever shows it to a
    person escapes it (:func:`conduit.names.escape`), once.
    """
    place = where
    if isinstance(exc, ClientError):
        return str(exc)
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return (
            f"{place}: host key not verified (not in known_hosts, or it changed): "
            "refusing to connect"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return f"{place}: permission denied (the server refused the login)"
    if isinstance(exc, asyncssh.SFTPError):
        for kind, words in _SFTP_WORDS.items():
            if isinstance(exc, kind):
                return f"{place}: {words}"
        return f"{place}: {exc.reason or type(exc).__name__}"
    if isinstance(exc, asyncssh.ChannelOpenError):
        return f"{place}: the server refused the session ({exc.reason})"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"{place}: connection closed by the server ({exc.reason})"
    if isinstance(exc, asyncssh.KeyImportError):
        return f"{place}: unusable key: {exc}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return f"{place}: timed out (no answer)"
    if isinstance(exc, socket.gaierror):
        return f"{place}: unknown host"
    if isinstance(exc, ConnectionRefusedError):
        return f"{place}: connection refused"
    if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
        # a peer gone mid-transfer: the same event whichever side noticed it first
        return f"{place}: connection lost ({exc.strerror or type(exc).__name__})"
    if isinstance(exc, OSError):
        words = exc.strerror or errno.errorcode.get(exc.errno or 0) or type(exc).__name__
        return f"{place}: {words}"
    return f"{place}: {type(exc).__name__}: {exc}"
