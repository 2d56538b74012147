"""The gateway's control socket: ``conduit reload`` asks, the gateway answers.

:func:`open_control` opens it with the gateway's handlers (reload, TOTP
enrolment journalled by the gateway, defender sync and listing).

A signal cannot carry an answer back, so ``conduit reload`` used to report
success for a file the gateway then refused. The control socket is a Unix
stream socket in the data folder (``DATA_DIR/control.sock``, mode 0600 in a
0700 folder). Each connection carries one request line and gets one answer
line, both JSON objects::

    -> {"command": "reload"}
    -> {"command": "totp-enrolled", "user": "alice", ...}   (more fields: the handler's)
    <- {"ok": true, "outcome": "success", "path": "...", "revoked_sessions": [...], ...}
    <- {"ok": false, "outcome": "failed", "path": "...", "error": "..."}

Only the gateway's own user (or root) may ask: besides the file mode, the
peer's credentials (``SO_PEERCRED``) are checked, so a socket made reachable
by a permissive folder or a copied ACL still refuses other users. Requests
are bounded (one line of at most 4 KiB, read within 5 s); unknown commands
are answered with an error, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conduit.gateway.twofactor import journal_enrolment

if TYPE_CHECKING:
    from conduit.gateway.app import Gateway

log = logging.getLogger("conduit.gateway")

SOCKET_NAME = "control.sock"
MAX_REQUEST = 4096
READ_TIMEOUT = 5.0

#: Called with the whole request (``command`` and any fields it carries).
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def peer_uid(sock: socket.socket | None) -> int | None:
    """The uid of the process on the other end, or None where it cannot be told."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


class ControlServer:
    """Serves one-line JSON requests on a Unix socket; ``handlers`` by command name."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            # Left by a gateway that died: the journal's lock already proved
            # that no other gateway uses this data folder.
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()
        old = os.umask(0o177)  # born 0600: no moment where others could connect
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            answer = await self._answer(reader, writer.get_extra_info("socket"))
            writer.write(json.dumps(answer).encode("utf-8") + b"\n")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except Exception as exc:  # a client that vanished: nothing to answer
            log.info("control socket: request ended: %s", exc.__class__.__name__)
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, sock: Any) -> dict[str, Any]:
        try:
            # Read first, even from a peer about to be refused: closing on a
            # client still sending would cost it the answer (EPIPE).
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        except (ValueError, asyncio.LimitOverrunError, TimeoutError):
            line = b""
        uid = peer_uid(sock)
        if uid is None or uid not in (os.geteuid(), 0):
            log.warning("control socket: refused a request from uid %s", uid)
            return {"ok": False, "error": "not allowed: the gateway's own user or root only"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "bad request: one JSON object on one line"}
        command = request.get("command") if isinstance(request, dict) else None
        handler = self.handlers.get(command) if isinstance(command, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command (known: {', '.join(self.handlers)})"}
        return await handler(request)


def ask(path: Path, command: str, timeout: float, **fields: Any) -> dict[str, Any]:
    """Send ``command`` (with ``fields``) to the gateway listening on ``path``; its answer.

    Raises ``FileNotFoundError``/``ConnectionRefusedError`` when no gateway
    listens, ``PermissionError`` for another user's gateway, ``TimeoutError``
    when no answer came within ``timeout`` seconds, ``ValueError`` for an
    answer that is not one JSON object.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        request = {**fields, "command": command}
        sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        data = b""
        while not data.endswith(b"\n") and len(data) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise ValueError("the gateway's answer is not a JSON object")
    return answer


async def open_control(gateway: Gateway) -> ControlServer | None:
    """The gateway's control socket with its handlers, listening; None (and
    an error logged) when it cannot be made, since SIGHUP still reloads."""

    async def reload(request: dict[str, Any]) -> dict[str, Any]:
        return (await gateway.reload_policy(via="control")).answer()

    async def totp_enrolled(request: dict[str, Any]) -> dict[str, Any]:
        return await journal_enrolment(gateway, request)

    handlers: dict[str, Handler] = {
        "reload": reload,
        "totp-enrolled": totp_enrolled,
        "defender": gateway.defence.sync,
        "defender-list": gateway.defence.listing,
    }
    control = ControlServer(socket_path(gateway.config.gateway.data_dir), handlers)
    try:
        await control.start()
    except OSError as exc:  # e.g. a data folder path too long for a Unix socket
        log.error(
            "no control socket at %s (%s): `conduit reload` cannot reach this gateway; "
            "SIGHUP still reloads",
            control.path,
            exc.strerror or exc,
        )
        return None
    return control
