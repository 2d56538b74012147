"""The one name rule, and the one escape for showing untrusted text to people.

Every name that can become a file, a folder or a policy entry passes
:func:`check_name`, whichever door it came through: an SFTP path, an SCP
``C``/``D`` line, a rename target, a relayed device path, an area, device or
user name in the policy file. Every path passes :func:`check_path`. One rule,
so no protocol can create what another cannot reach or delete.

Refused in a name:

* C0 controls (U+0000-U+001F, so NUL, CR, LF, ESC, BEL), DEL (U+007F) and C1
  controls (U+0080-U+009F): they move cursors, recolour terminals, end log
  lines and forge new ones;
* bidirectional controls, the "Trojan Source" characters (CVE-2021-42574):
  embeddings and overrides U+202A-U+202E, isolates U+2066-U+2069, *and* the
  marks U+200E, U+200F and U+061C. Marks cannot nest, but they still reorder
  the neutral characters around them (``.``, ``-``, digits), so
  ``invoice<RLM>.pdf.exe`` can display in another order; and no name
  needs them, since the bidi algorithm lays out Hebrew or Arabic names by
  itself;
* U+2028/U+2029 (line and paragraph separators: line breaks to many viewers)
  and lone surrogates (not UTF-8; only undecodable bytes become them);
* invisible format characters that only hide text: soft hyphen U+00AD,
  U+180E, zero-width space U+200B, U+2060-U+2064, U+206A-U+206F, the BOM
  U+FEFF, interlinear annotations U+FFF9-U+FFFB and tags U+E0000-U+E007F
  (``fw.bin`` and ``fw<ZWSP>.bin`` must not be two files that look alike);
* ``/``, and the names ``""``, ``.`` and ``..``;
* more than 255 bytes of UTF-8 (the POSIX ``NAME_MAX`` of common file systems).

Allowed: everything else, including spaces (also no-break spaces), non-Latin
scripts, emoji and the joiners (U+200C/U+200D) that Persian, Indic scripts and
emoji sequences need. The list is explicit rather than "whatever
``str.isprintable`` says", so a name valid today stays valid when Python's
Unicode tables grow, and a policy file that checks today still checks.
Look-alike names (a Cyrillic letter for a Latin one) are a display problem no
character list solves; the audit records names exactly.

A path is at most 4,096 bytes of UTF-8 (``PATH_MAX``), counted as the gateway
shows it (``/area/sub/name``).
"""

from __future__ import annotations

import re

#: The top-level folder where devices appear (``/devices/plc-01/...``) and the
#: prefix of device grants (``devices/plc-*``): no area may take this name.
DEVICES = "devices"

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096

_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_INVISIBLE = "\u00ad\u180e\u200b\u2060-\u2064\u206a-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f"
CONTROLS = "\x00-\x1f\x7f-\x9f" + _BIDI + _INVISIBLE + "\u2028\u2029\ud800-\udfff"
"""The refused characters as the body of a regex class, for formats with their own escapes."""
_CONTROL = re.compile(f"[{CONTROLS}]")
_ESCAPED = re.compile(f"[{CONTROLS}\\\\]")


class BadName(ValueError):
    """A name or path the rule refuses; ``str()`` is a short reason for the client."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file, folder or policy name; None if it can."""
    if name in ("", ".", ".."):
        return "empty or dot name"
    if "/" in name:
        return "'/' in a name"
    if _CONTROL.search(name):
        return "control characters in file names are not allowed"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return "file name too long"
    return None


def check_name(name: str) -> str:
    """``name`` if the rule allows it, else :class:`BadName` with the reason."""
    problem = name_problem(name)
    if problem:
        raise BadName(problem)
    return name


def is_valid_name(name: str) -> bool:
    return name_problem(name) is None


def has_controls(text: str) -> bool:
    """Whether ``text`` holds a character the rule refuses (controls, bidi, separators)."""
    return _CONTROL.search(text) is not None


def check_path(parts: tuple[str, ...]) -> tuple[str, ...]:
    """Every component passes :func:`check_name` and ``/a/b`` fits in 4,096 bytes.

    Every SFTP request checks its whole path (a folder's child too): the
    common case, a path with nothing to refuse, is told by looking at the
    path joined once (~10 Python calls, not ~7 per component); anything
    else, or a name that might be over 255 bytes, goes component by
    component (:func:`_check_each`), so a refusal gives the same reason.
    """
    if not parts:
        return parts
    joined = "/".join(parts)
    if (
        _CONTROL.search(joined) is None  # refused characters (surrogates too)
        and "" not in parts
        and "." not in parts
        and ".." not in parts
        and joined.count("/") == len(parts) - 1  # no "/" inside a name
        # UTF-8 is at most 4 bytes a character: 63 characters fit in 255 bytes
        and max(map(len, parts)) * 4 <= MAX_NAME_BYTES
        and len(joined.encode("utf-8")) + 1 <= MAX_PATH_BYTES  # "/" + joined
    ):
        return parts
    return _check_each(parts)


def _check_each(parts: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`check_path` component by component, in order: the reason given
    is the first component's first problem."""
    total = 0
    for part in parts:
        check_name(part)
        total += 1 + len(part.encode("utf-8"))
    if total > MAX_PATH_BYTES:
        raise BadName("path too long")
    return parts


def escape(value: object) -> str:
    """``value`` as text safe for a terminal, a log line or a report.

    The characters the name rule refuses become visible escapes (``\\x1b``,
    ``\\u202e``, an undecodable byte kept by ``surrogateescape`` as ``\\xff``),
    and a backslash is doubled, so the escaped form is unambiguous: a name that
    *contains* the text ``\\x1b`` does not look like one that contains ESC.
    """
    text = "" if value is None else str(value)
    if not _ESCAPED.search(text):
        return text

    def one(m: re.Match[str]) -> str:
        c = m.group(0)
        if c == "\\":
            return "\\\\"
        code = ord(c)
        if 0xDC80 <= code <= 0xDCFF:
            return f"\\x{code - 0xDC00:02x}"
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _ESCAPED.sub(one, text)
