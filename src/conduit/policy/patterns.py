"""Path patterns of grants and conduits: shell-style globs over virtual paths.

``*`` and ``?`` never cross a ``/``; ``**`` does. A pattern without ``/``
matches the last component (``*.bin`` matches ``a.bin`` and ``sub/a.bin``); a
pattern with ``/`` matches the whole path below the area or device
(``backups/*.cfg``). Paths reaching the policy are already normalised, so a
pattern with ``.``/``..`` components or a leading ``/`` can never match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pattern:
    text: str
    regex: re.Pattern[str]
    whole_path: bool

    def matches(self, rel: str) -> bool:
        subject = rel if self.whole_path else rel.rpartition("/")[2]
        return self.regex.fullmatch(subject) is not None


def _translate(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (close := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : close]
            negate = body.startswith("!")
            chars = re.escape((body[1:] if negate else body).replace("/", "")).replace(r"\-", "-")
            out.append(f"[^/{chars}]" if negate else f"[{chars}]")
            i = close + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def compile_pattern(text: str) -> Pattern:
    return Pattern(text, re.compile(_translate(text), re.DOTALL), "/" in text)


def never_matches(text: str) -> str | None:
    """Why ``text`` can never match a normalised path, or None."""
    if not text:
        return "empty pattern"
    if text.startswith("/"):
        return "patterns are relative to the area or device (no leading /)"
    if text.endswith("/"):
        return "a trailing / never matches a file"
    if any(part in (".", "..", "") for part in text.split("/")):
        return "paths are normalised: '.', '..' and '//' never occur"
    if not text.isprintable():
        return "file names with control characters are refused before the policy"
    return None


def any_match(patterns: tuple[Pattern, ...], rel: str) -> bool:
    """No patterns: everything matches. An empty ``rel`` (the area itself) always matches."""
    return not patterns or not rel or any(p.matches(rel) for p in patterns)
