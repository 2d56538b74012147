"""SFTP constants conduit._asyncssh defines itself because asyncssh does not export them."""

from __future__ import annotations

import asyncssh.sftp

from conduit._asyncssh import sftpclient
from conduit._asyncssh import sftpserver as sftp


def test_packet_type_constants_match_asyncssh() -> None:
    # Defined locally because asyncssh does not export them; fail if they drift.
    assert sftp.FXP_OPENDIR == asyncssh.sftp.FXP_OPENDIR  # type: ignore[attr-defined]
    assert sftp.FXP_NAME == asyncssh.sftp.FXP_NAME  # type: ignore[attr-defined]
    assert sftp.FXP_CLOSE == asyncssh.sftp.FXP_CLOSE  # type: ignore[attr-defined]
    assert sftp.FXP_EXTENDED_REPLY == asyncssh.sftp.FXP_EXTENDED_REPLY  # type: ignore[attr-defined]
    assert sftpclient.FXP_EXTENDED_REPLY == asyncssh.sftp.FXP_EXTENDED_REPLY  # type: ignore[attr-defined]
