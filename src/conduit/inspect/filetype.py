"""True file type: what the bytes are, whatever the name says.

A conduit's ``types`` lists the libmagic MIME types it lets through
(``application/gzip``, ``application/x-executable``; ``text/*`` allows a whole
family). :class:`TypeStream` keeps only the first :data:`HEAD` bytes of an
upload (libmagic's tests for the formats that matter here look no further)
and asks libmagic once the upload is complete. libmagic is a C library that
blocks, so it runs in a worker thread.

A ``.bin`` that is really a shell script is refused with the type found:
``type: text/x-shellscript not allowed``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from conduit.inspect.base import State, Verdict

CHECK = "type"
HEAD = 64 * 1024  # covers ELF, PE, archives, tar's header at 257, ISO 9660 at 32 KiB

_lock = threading.Lock()
_magic: Any = None  # one magic.Magic, made on first use


def unavailable() -> str | None:
    """Why libmagic cannot be used on this machine, or None if it can.

    python-magic is imported on first use, not with this module: a gateway
    whose conduits name no ``types`` runs without Debian's libmagic1, and
    ``conduit check`` says so for one that does.
    """
    try:
        import magic  # noqa: F401
    except ImportError as exc:  # python-magic raises this when libmagic is missing
        return f"libmagic cannot be loaded ({exc}); on Debian: apt-get install libmagic1"
    return None


def detect(head: bytes) -> str:
    """libmagic's MIME type for a file starting with ``head`` (blocking: call in a thread)."""
    global _magic
    with _lock:  # one libmagic handle, not safe to share between threads at once
        if _magic is None:
            import magic

            _magic = magic.Magic(mime=True)
        return str(_magic.from_buffer(head))


def allowed(mime: str, patterns: Sequence[str]) -> bool:
    """``mime`` is one of ``patterns`` (exact, or ``major/*``)."""
    for pattern in patterns:
        if pattern == mime:
            return True
        major, _, minor = pattern.partition("/")
        if minor == "*" and mime.startswith(f"{major}/"):
            return True
    return False


class TypeStream:
    """Keeps the head of one upload and judges its type at the end."""

    check = CHECK

    def __init__(self, types: Sequence[str], head: int = HEAD) -> None:
        self._types = tuple(types)
        self._limit = head
        self._head = bytearray()

    async def feed(self, chunk: bytes) -> None:
        room = self._limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]

    async def finish(self) -> Verdict:
        started = time.monotonic()
        try:
            mime = await asyncio.to_thread(detect, bytes(self._head))
        except Exception as exc:  # libmagic missing, its database, MagicException: fail closed
            return Verdict(
                CHECK,
                State.FAILED,
                "type: cannot be determined",
                f"libmagic failed: {exc.__class__.__name__}",
                time.monotonic() - started,
            )
        spent = time.monotonic() - started
        wanted = ", ".join(self._types)
        # libmagic's answer is ASCII from its own database, never the client's
        mime = mime.encode("ascii", "replace").decode("ascii")[:100]
        if allowed(mime, self._types):
            return Verdict(CHECK, State.PASSED, f"type: {mime}", f"type {mime} in {wanted}", spent)
        return Verdict(
            CHECK,
            State.FAILED,
            f"type: {mime} not allowed",
            f"libmagic found {mime}; the conduit allows {wanted}",
            spent,
        )

    async def abort(self) -> None:
        self._head.clear()

    async def identity(self) -> str:
        """What this check's verdict depends on: libmagic's version, the allowed types."""
        import magic

        release: Any = magic.version()  # type: ignore[no-untyped-call]
        return f"libmagic {release}: {', '.join(self._types)}"
