"""Extended SFTP requests from asyncssh's client: the private half of ``conduit sync``.

asyncssh's ``SFTPClient`` sends ``copy-data`` publicly (``remote_copy``), but
has no public way to send any other extended request. ``check-file-handle``
(draft-ietf-secsh-filexfer-extensions: the hashes of a file's blocks) goes
through the handler's private ``_make_request``, after the reply type is
registered on that one handler (asyncssh refuses a reply it does not expect).

Every asyncssh member used here is in :data:`USES`, pinned by
tests/test_tuning.py.
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh import sftp as _sftp
from asyncssh.packet import SSHPacket, String, UInt32, UInt64

FXP_EXTENDED_REPLY = 201

USES: dict[str, Any] = {
    "SFTPClientHandler._make_request": _sftp.SFTPClientHandler._make_request,
    "SFTPClientHandler._return_types": _sftp.SFTPClientHandler._return_types,
    "SFTPClient.__init__": _sftp.SFTPClient.__init__,
}


async def check_file(
    sftp: asyncssh.SFTPClient, handle: bytes, start: int, length: int, block: int
) -> bytes:
    """The concatenated SHA-256 hashes of ``block``-byte blocks of an open file.

    Raises ``asyncssh.SFTPOpUnsupported`` when the server does not know the
    request (then the caller falls back), any other ``SFTPError`` as sent.
    """
    handler = sftp._handler
    name = b"check-file-handle"
    if name not in handler._return_types:
        # An instance attribute: only this session's handler learns the type.
        handler._return_types = {**handler._return_types, name: FXP_EXTENDED_REPLY}
    reply = await handler._make_request(
        name, String(handle), String(b"sha256"), UInt64(start), UInt64(length), UInt32(block)
    )
    assert isinstance(reply, SSHPacket)
    if reply.get_string() != b"check-file" or reply.get_string() != b"sha256":
        raise asyncssh.SFTPBadMessage("check-file: unexpected reply")
    hashes = reply.get_remaining_payload()
    if len(hashes) % 32:
        raise asyncssh.SFTPBadMessage("check-file: a truncated hash")
    return hashes
