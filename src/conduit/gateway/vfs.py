"""The virtual root the gateway serves: pure path arithmetic, no file system.

A client path (bytes, absolute or relative, with ``~``, ``.`` and ``..``) is
normalised *lexically* inside the virtual root ``/``: ``..`` never climbs
above ``/``. The result names a root entry (an area, or ``devices``) and the
components below it; the storage backend then resolves those components
itself, refusing symlinks that leave its root. Nothing here can reach a real
path: there is no real path here.
"""

from __future__ import annotations

from dataclasses import dataclass

from conduit.policy.patterns import normalise

DEVICES = "devices"
"""The root entry under which each device is served as ``/devices/NAME``."""


class BadPath(ValueError):
    """A path no file can have: NUL, undecodable bytes, a component too long."""


MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


@dataclass(frozen=True, slots=True)
class VirtualPath:
    """A normalised location in the virtual root, e.g. ``/inbox/sub/a.bin``."""

    parts: tuple[str, ...]

    @property
    def text(self) -> str:
        return "/" + "/".join(self.parts)

    @property
    def is_root(self) -> bool:
        return not self.parts

    @property
    def top(self) -> str | None:
        """The root entry: an area name or ``devices`` (None for ``/`` itself)."""
        return self.parts[0] if self.parts else None

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else "/"

    @property
    def parent(self) -> VirtualPath:
        return VirtualPath(self.parts[:-1])

    def child(self, name: str) -> VirtualPath:
        return VirtualPath((*self.parts, name))

    def __str__(self) -> str:
        return self.text


ROOT = VirtualPath(())


def resolve(raw: bytes | str, cwd: VirtualPath = ROOT) -> VirtualPath:
    """Normalise a client-supplied path inside the virtual root.

    ``~`` and ``~/x`` mean the virtual root (there are no home folders);
    ``~user`` is refused, since it would pretend to reach somebody else's.
    """
    if isinstance(raw, bytes):
        if len(raw) > MAX_PATH_BYTES:
            raise BadPath("path too long")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadPath("file names must be UTF-8") from None
    else:
        text = raw
    if "\0" in text:
        raise BadPath("NUL in path")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadPath("path too long")
    if text == "~" or text.startswith("~/"):
        text = "/" + text[1:]
    elif text.startswith("~"):
        raise BadPath("no home folders on this gateway")
    parts = normalise(text if text.startswith("/") else f"{cwd.text}/{text}")
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise BadPath("file name too long")
        if not part.isprintable():
            # CR/LF, ANSI escapes and other control characters: legal on
            # POSIX, used by nobody legitimately, and a log/terminal injection
            # vector for everyone downstream.
            raise BadPath("control characters in file names are not allowed")
    return VirtualPath(tuple(parts))
