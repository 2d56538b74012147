"""Seams for fault-injection tests: the journal's file operations and hold points.

The journal writes and flushes through :data:`fs` rather than calling ``os``
directly, so a test can swap in a layer whose ``write`` or ``fdatasync``
raises ``ENOSPC``/``EIO`` at a chosen moment without a full disk or a broken
device. :func:`hold` is a named step in the write-ahead sequence
(``after-intent``: the intent is durable, the effect not done;
``after-effect``: the effect is done, its outcome not written) where a
gateway started with ``CONDUIT_HOLD_AT=<step>`` (optionally ``<step>:<type>``,
e.g. ``after-intent:file.delete``) stops: it writes a line to the file named
by ``CONDUIT_HOLD_FILE`` (or stderr) and waits there, so a test can
``kill -9`` it at exactly that point. Without the variable it costs one
comparison.
"""

from __future__ import annotations

import asyncio
import os
import sys


class FileOps:
    """The calls the journal makes to put bytes on disk (``os`` looked up per call)."""

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


#: The layer in use; tests replace it (and put it back).
fs = FileOps()

_HOLD_AT = os.environ.get("CONDUIT_HOLD_AT", "")


async def hold(step: str, type: str) -> None:
    """Stop here for good if ``CONDUIT_HOLD_AT`` names this step (a test hook)."""
    if not _HOLD_AT:
        return
    wanted, _, of = _HOLD_AT.partition(":")
    if wanted != step or (of and of != type):
        return
    line = f"conduit: holding at {step} {type}\n"
    target = os.environ.get("CONDUIT_HOLD_FILE")
    if target:
        with open(target, "a") as f:
            f.write(line)
    else:
        sys.stderr.write(line)
    await asyncio.Event().wait()  # until the test kills the process
