"""The virtual root the gateway serves: pure path arithmetic, no file system.

A client path (bytes, absolute or relative, with ``~``, ``.`` and ``..``) is
normalised *lexically* inside the virtual root ``/``: ``..`` never climbs
above ``/``. The result names a root entry (an area, or ``devices``) and the
components below it; the storage backend then resolves those components
itself, refusing symlinks that leave its root. Nothing here can reach a real
path: there is no real path here. Every component obeys the one name rule
(:mod:`conduit.names`), however the path was built: :func:`resolve` for a
client's path, :meth:`VirtualPath.child` for a name from an SCP line.
"""

from __future__ import annotations

from dataclasses import dataclass

from conduit.names import MAX_PATH_BYTES, BadName, check_path
from conduit.policy.patterns import normalise

"""The root entry under which each device is served as ``/devices/NAME``."""


BadPath = BadName
"""A path no file can have: NUL, controls, undecodable bytes, too long (see conduit.names)."""


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
        """``self/name``; :class:`BadPath` if ``name`` or the result breaks the name rule."""
        return VirtualPath(check_path((*self.parts, name)))

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
    # CR/LF, ANSI escapes, bidi overrides: legal on POSIX, used by nobody
    # legitimately, and a log/terminal injection vector for everyone downstream.
    return VirtualPath(check_path(parts))
