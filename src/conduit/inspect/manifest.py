"""Vendor SHA-256 lists (``SHA256SUMS``), read strictly.

A manifest vouches for a file when it lists the file's name with the file's
SHA-256. The lines ``sha256sum`` writes are accepted: ``HASH  NAME`` (text
mode, two spaces) and ``HASH *NAME`` (binary mode), as well as the BSD form
``SHA256 (NAME) = HASH`` of ``sha256sum --tag``. A ``NAME.sha256`` file may
hold the bare hash of ``NAME``. The rules are strict, because a manifest is
a security statement and a guess is a hole:

- the text must be UTF-8 (a leading byte-order mark is dropped); lines end in
  LF or CRLF, and a carriage return anywhere else is an error;
- blank lines and lines starting with ``#`` are skipped; any other line that
  is not exactly one of the forms above is an error naming its number (a tab
  or a single space between hash and name, spaces around the name, control
  characters, ``sha256sum``'s backslash-escaped names);
- the hash is 64 hexadecimal digits (either case);
- a name listed twice with two different hashes is an error; twice with the
  same hash is one entry;
- a name is matched by its last component (``./fw/rtu.bin`` lists
  ``rtu.bin``), exactly: no case folding and no Unicode normalisation. A name
  that differs from the file's only that way is reported as such.

Any error rejects the whole manifest: a half-understood list vouches for
nothing.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_HEX = re.compile(r"[0-9a-fA-F]{64}")
_GNU = re.compile(r"(?P<hash>[0-9a-fA-F]{64})(?:  | \*)(?P<name>.*)")
_BSD = re.compile(r"SHA256 \((?P<name>.*)\) = (?P<hash>[0-9a-fA-F]{64})")
_LINE_FORMS = "HASH  NAME, HASH *NAME or SHA256 (NAME) = HASH"


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a manifest says about one file."""

    listed: bool  # the name is in it
    matches: bool  # ... with this SHA-256
    note: str  # why not, for the journal


def _name_problem(name: str) -> str | None:
    if not name:
        return "no file name"
    if name != name.strip():
        return "spaces around the file name"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "a control character in the file name"
    base = name.rpartition("/")[2]
    if base in ("", ".", ".."):
        return "the name is a folder, not a file"
    return None


@dataclass(frozen=True)
class Manifest:
    """Names (last components) and their SHA-256s, lower case."""

    entries: dict[str, str]
    source: str = "manifest"

    @classmethod
    def parse(cls, data: bytes, source: str = "manifest") -> Manifest:
        """The manifest in ``data``; :class:`ManifestError` on any fault."""
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{source}: not UTF-8 (byte {exc.start})") from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        bare = source.rpartition("/")[2]
        own = bare[: -len(".sha256")] if bare.endswith(".sha256") else None
        entries: dict[str, str] = {}
        first_line: dict[str, int] = {}
        for number, line in enumerate(lines, 1):
            where = f"{source} line {number}"
            line = line.removesuffix("\r")
            if "\r" in line:
                raise ManifestError(f"{where}: a carriage return inside the line")
            if not line or line.startswith("#"):
                continue
            if line.startswith("\\"):
                raise ManifestError(
                    f"{where}: escaped names (a leading backslash) are not accepted"
                )
            gnu, bsd = _GNU.fullmatch(line), _BSD.fullmatch(line)
            if gnu:
                digest, name = gnu["hash"], gnu["name"]
            elif bsd:
                digest, name = bsd["hash"], bsd["name"]
            elif own is not None and _HEX.fullmatch(line):
                digest, name = line, own
            else:
                raise ManifestError(f"{where}: not a checksum line ({_LINE_FORMS})")
            problem = _name_problem(name)
            if problem:
                raise ManifestError(f"{where}: {problem}")
            name = name.rpartition("/")[2]
            digest = digest.lower()
            if name in entries and entries[name] != digest:
                raise ManifestError(
                    f"{where}: {name!r} is listed again with another hash"
                    f" (first on line {first_line[name]})"
                )
            entries.setdefault(name, digest)
            first_line.setdefault(name, number)
        if not entries:
            raise ManifestError(f"{source}: lists no file")
        return cls(entries, source)

    def lookup(self, name: str, sha256: str) -> Lookup:
        """Does this manifest vouch for the file ``name`` (any path; its last component)?"""
        base = name.rpartition("/")[2]
        listed = self.entries.get(base)
        if listed is not None:
            if listed == sha256.lower():
                return Lookup(True, True, f"{self.source} lists {base!r} with this SHA-256")
            return Lookup(True, False, f"{self.source} lists {base!r} as {listed}, not {sha256}")
        folded = unicodedata.normalize("NFC", base).casefold()
        near = [n for n in self.entries if unicodedata.normalize("NFC", n).casefold() == folded]
        if near:
            return Lookup(
                False,
                False,
                f"{self.source} lists {near[0]!r}, which differs from {base!r} only in"
                " case or Unicode form",
            )
        return Lookup(False, False, f"{self.source} does not list {base!r}")
