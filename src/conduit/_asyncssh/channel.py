"""A stream session's channel, which asyncssh keeps private.

``SSHServerStreamSession`` gives its subclasses no public way to reach the
channel it was opened on, nor to switch a session opened with the server's
text encoding to bytes (asyncssh's own SFTP start does both through
``_chan`` and ``_encoding``; see ``_init_sftp_server``). The gateway needs
both: every SFTP and SCP session runs on bytes, and the replies queued on
the channel are bounded. The members used are in :data:`USES`, pinned by
tests/test_tuning.py.
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh.stream import SSHServerStreamSession, SSHStreamSession

#: Private members of asyncssh's stream sessions used here.
USES: dict[str, Any] = {
    "SSHStreamSession.__init__": SSHStreamSession.__init__,
    "SSHStreamSession.connection_made": SSHStreamSession.connection_made,
    "SSHServerStreamSession._init_sftp_server": SSHServerStreamSession._init_sftp_server,
}


def channel(session: SSHServerStreamSession[Any]) -> asyncssh.SSHServerChannel[bytes]:
    """The channel ``session`` was opened on (once ``connection_made`` ran)."""
    assert session._chan is not None
    chan: asyncssh.SSHServerChannel[bytes] = session._chan  # type: ignore[assignment]
    return chan


def binary_channel(session: SSHServerStreamSession[Any]) -> asyncssh.SSHServerChannel[bytes]:
    """The session's channel, it and the session switched to bytes, as
    asyncssh's ``_init_sftp_server`` does for its own SFTP server."""
    chan = channel(session)
    chan.set_encoding(None)
    session._encoding = None
    return chan
