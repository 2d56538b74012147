"""Run ``conduit`` with the relay's upload phases timed: ``bench_relay.py --phases``.

Where a relayed upload's wall time goes once the client's last byte is in:
the journal's intent, the device's last write answers, the close, custody
(the device's ``sha256`` command, or what is left of the read-back) and the
rename. The gateway is started as ``python bench/relay_phases.py serve ...``
with ``CONDUIT_PHASES=FILE``; each upload appends one JSON line of
``time.time()`` stamps (comparable with the client's), and how many bytes the
read-back had hashed when the last byte came in. Wrapping methods from
outside changes nothing in the code measured but a few calls per upload.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from conduit.storage.relay import custody, sftp
from conduit.storage.relay.readback import WrittenPrefix
from conduit.transfer import pipeline

OUT = os.environ["CONDUIT_PHASES"]
_now: dict[str, Any] = {}


def _stamp(name: str) -> None:
    _now.setdefault(name, time.time())


def _after(cls: Any, method: str, name: str, *, before: str | None = None) -> None:
    inner = getattr(cls, method)

    @functools.wraps(inner)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            _stamp(before)
        result = await inner(*args, **kwargs)
        _stamp(name)
        return result

    setattr(cls, method, wrapped)


def _patch() -> None:
    open_write = sftp.SftpDevice.open_write

    async def opened(self: Any, *args: Any, **kwargs: Any) -> Any:
        _now.clear()
        _now["read_back_bytes"] = 0
        _stamp("open")
        return await open_write(self, *args, **kwargs)

    sftp.SftpDevice.open_write = opened  # type: ignore[method-assign]

    upload_commit = pipeline.Upload.commit

    async def commit(self: Any) -> str:
        _stamp("last_byte")
        _now["read_back_at_last_byte"] = _now.get("read_back_bytes", 0)
        try:
            return await upload_commit(self)
        finally:
            _stamp("done")
            with open(OUT, "a") as out:
                out.write(json.dumps(_now) + "\n")

    pipeline.Upload.commit = commit  # type: ignore[method-assign]

    handle_commit = sftp.SftpWriteHandle.commit

    async def relay_commit(self: Any) -> None:
        _stamp("intent_done")
        _now["read_back_at_intent"] = _now.get("read_back_bytes", 0)
        await handle_commit(self)

    sftp.SftpWriteHandle.commit = relay_commit  # type: ignore[method-assign]

    local = sftp.SftpWriteHandle._local_sha256

    def local_sha256(self: Any) -> str:
        _stamp("writes_answered")  # called right after every write settled
        _now["read_back_at_writes_answered"] = _now.get("read_back_bytes", 0)
        return local(self)

    sftp.SftpWriteHandle._local_sha256 = local_sha256  # type: ignore[method-assign]

    finish = WrittenPrefix.finish

    def finished(self: WrittenPrefix, end: int) -> None:
        _stamp("closed")  # called right after the device file's close answered
        _now["read_back_at_close"] = _now.get("read_back_bytes", 0)
        finish(self, end)

    WrittenPrefix.finish = finished  # type: ignore[method-assign]

    read_back = sftp.read_back_sha256

    async def counted(blocks: Callable[[], AsyncIterator[bytes]]) -> str:
        async def counting() -> AsyncIterator[bytes]:
            async for block in blocks():
                _now["read_back_bytes"] = _now.get("read_back_bytes", 0) + len(block)
                yield block

        try:
            return await read_back(counting)
        finally:
            _stamp("read_back_done")

    sftp.read_back_sha256 = counted
    custody.read_back_sha256 = counted
    _after(custody, "verify", "custody_done", before="custody_start")
    _after(sftp.SftpWriteHandle, "_rename_into_place", "renamed", before="rename_start")


if __name__ == "__main__":
    _patch()
    from conduit.cli.main import main

    sys.exit(main())
