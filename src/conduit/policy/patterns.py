"""Path patterns of grants and conduits, and the virtual-path normaliser.

Glob rules (one set for grants and conduits):

- ``*`` and ``?`` never cross ``/``; ``[abc]`` / ``[!abc]`` are character
  classes; ``**`` matches anything, ``/`` included.
- A pattern without ``/`` matches the *last component* of the path at any
  depth (``*.bin`` matches ``a.bin`` and ``sub/a.bin``).
- A pattern with ``/`` matches the *whole* relative path (``cfg/*.xml``
  matches ``cfg/a.xml``, not ``x/cfg/a.xml`` nor ``cfg/sub/a.xml``).
- Matching is case-sensitive and is always done on a normalised path
  (see :func:`normalise`): a ``..`` can never reach a pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def normalise(path: str) -> tuple[str, ...]:
    """Components of a virtual path with ``.``, ``..`` and empty parts resolved.

    ``..`` stops at the virtual root, as SFTP servers do, so the result never
    names anything outside ``/``.
    """
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return tuple(parts)


def _translate(pattern: str) -> str:
    """Regex source for one glob; ``*``/``?``/classes never match ``/``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            start = i + 2 if pattern[i + 1 : i + 2] == "!" else i + 1
            end = pattern.find("]", start + 1)
            body = pattern[start:end]
            if end < 0 or "/" in body:
                out.append(re.escape(c))
            else:
                body = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
                out.append(f"[^/{body}]" if start == i + 2 else f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class PathPattern:
    """One compiled glob; ``text`` is what the policy file says."""

    text: str
    anchored: bool
    regex: re.Pattern[str]
    parts: tuple[re.Pattern[str] | None, ...]  # per component; None: a ``**`` component

    @classmethod
    def compile(cls, text: str) -> PathPattern:
        anchored = "/" in text
        parts = tuple(
            None if "**" in part else re.compile(_translate(part)) for part in text.split("/")
        )
        return cls(text, anchored, re.compile(_translate(text)), parts)

    def matches(self, rel: str, last: str) -> bool:
        """Does the normalised relative path ``rel`` (last component ``last``) match?"""
        return self.regex.fullmatch(rel if self.anchored else last) is not None

    def could_contain(self, parts: tuple[str, ...]) -> bool:
        """Could something below the directory ``parts`` match (or the directory itself)?"""
        if not self.anchored:
            return True
        for index, name in enumerate(parts):
            if index >= len(self.parts):
                return False
            part = self.parts[index]
            if part is None:
                return True
            if part.fullmatch(name) is None:
                return False
        return True


def pattern_problem(text: str) -> str | None:
    """Why ``text`` can never match a normalised path, or None if it can."""
    if not text:
        return "empty pattern never matches"
    if text.startswith("/"):
        return "never matches: patterns are relative (drop the leading '/')"
    if text.endswith("/"):
        return "never matches: paths never end with '/' (drop the trailing '/')"
    for part in text.split("/"):
        if part == "":
            return "never matches: empty component ('//')"
        if part in (".", ".."):
            return f"never matches: paths are normalised and never contain {part!r}"
    return None
