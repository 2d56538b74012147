"""Every private asyncssh member Conduit uses, in one table for the pin test.

tests/test_tuning.py hashes :func:`source` of each entry of :data:`MEMBERS`
and compares it with the hash recorded for the pinned asyncssh release: an
upgrade that changes any of them fails there, naming the member, so the
code that copies, wraps or relies on it is re-read before it runs again.
Methods are pinned by their source; asyncssh's class-level tables (packet
handlers, return types, extensions) by their entries. Private attributes
are covered by the ``__init__`` (or method) that sets them.
"""

from __future__ import annotations

import inspect
from typing import Any

from conduit._asyncssh import (
    aead,
    authwatch,
    certwatch,
    chacha,
    channel,
    goodbye,
    kexinit,
    multifactor,
    records,
    recvlane,
    sendlane,
    sftpclient,
    sftplean,
    sftpserver,
    tuning,
)

MEMBERS: dict[str, Any] = {
    **tuning.ORIGINALS,
    **tuning.USES,
    **sendlane.ORIGINALS,
    **sendlane.USES,
    **kexinit.USES,
    **authwatch.USES,
    **certwatch.USES,
    **multifactor.USES,
    **sftpserver.USES,
    **sftplean.USES,
    **sftpclient.USES,
    **channel.USES,
    **goodbye.USES,
    **records.USES,
    **recvlane.ORIGINALS,
    **recvlane.USES,
    **aead.USES,
    **chacha.ORIGINALS,
    **chacha.USES,
}


def source(member: Any) -> str:
    """What the pin hashes: a function's source, or a table's entries by name."""
    if isinstance(member, dict):
        return repr(
            sorted((repr(k), getattr(v, "__qualname__", repr(v))) for k, v in member.items())
        )
    if isinstance(member, list):
        return repr(member)
    return inspect.getsource(member)
