"""OpenSSH key revocation lists (``ssh-keygen -k``), read from the published format.

The format is OpenSSH's ``PROTOCOL.krl``: a header, then sections that revoke
certificates (by serial list, serial range, serial bitmap or key id, for one
CA or for every CA), plain keys (their blobs) and plain keys by SHA-1 or
SHA-256 fingerprint. Parsing is strict and fails closed: anything this
module does not understand (a truncated field, an unknown section, a
critical extension, a signature section, which OpenSSH itself refuses since
9.4) is a :class:`KRLError`, and the caller keeps nobody in rather than
everybody.

A KRL may revoke 100,000 serials or more: every lookup is a set membership,
a bisection over merged ranges or one bit of a bitmap, never a scan.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_right
from dataclasses import dataclass, field

MAGIC = b"SSHKRL\n\0"
FORMAT_VERSION = 1

SECTION_CERTIFICATES = 1
SECTION_EXPLICIT_KEY = 2
SECTION_FINGERPRINT_SHA1 = 3
SECTION_SIGNATURE = 4
SECTION_FINGERPRINT_SHA256 = 5
SECTION_EXTENSION = 255

CERT_SERIAL_LIST = 0x20
CERT_SERIAL_RANGE = 0x21
CERT_SERIAL_BITMAP = 0x22
CERT_KEY_ID = 0x23
CERT_EXTENSION = 0x39

#: A bitmap wider than this many bytes (64 Mi serials) is refused as hostile.
MAX_BITMAP_BYTES = 8 * 1024 * 1024


class KRLError(ValueError):
    """The file is not a KRL this gateway can trust: one line saying why."""


class _Reader:
    """SSH wire types over a byte string; any overrun is a :class:`KRLError`."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise KRLError(f"truncated {self.what}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def byte(self) -> int:
        return self._take(1)[0]

    def uint32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self._take(8))[0])

    def string(self) -> bytes:
        return self._take(self.uint32())

    def boolean(self) -> bool:
        return self.byte() != 0


@dataclass
class CertRevocations:
    """What one CA's certificates (or every CA's: ``ca`` empty) lose."""

    serials: set[int] = field(default_factory=set)
    # merged, sorted, disjoint [low, high] ranges: starts for bisect, ends alongside
    range_starts: list[int] = field(default_factory=list)
    range_ends: list[int] = field(default_factory=list)
    bitmaps: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, big-endian bits)
    # after parse: bitmaps sorted by offset, and the furthest serial any of
    # bitmaps[0..i] reaches (so a lookup stops as soon as none can hold it)
    bitmap_starts: list[int] = field(default_factory=list)
    bitmap_reach: list[int] = field(default_factory=list)
    key_ids: set[str] = field(default_factory=set)

    def serial_revoked(self, serial: int) -> bool:
        if serial in self.serials:
            return True
        i = bisect_right(self.range_starts, serial) - 1
        if i >= 0 and serial <= self.range_ends[i]:
            return True
        # ssh-keygen writes disjoint bitmaps: one bisection, one bit; bitmaps
        # that overlap (never written by OpenSSH) are walked back only while
        # one of them can still reach the serial.
        i = bisect_right(self.bitmap_starts, serial) - 1
        while i >= 0 and self.bitmap_reach[i] > serial:
            offset, bits = self.bitmaps[i]
            index = serial - offset
            if index < len(bits) * 8 and bits[len(bits) - 1 - index // 8] >> (index % 8) & 1:
                return True
            i -= 1
        return False

    def _index(self) -> None:
        self.bitmaps.sort()
        self.bitmap_starts = [offset for offset, _ in self.bitmaps]
        reach = 0
        for offset, bits in self.bitmaps:
            reach = max(reach, offset + len(bits) * 8)
            self.bitmap_reach.append(reach)


@dataclass
class KRL:
    """A parsed KRL: look up keys and certificates in it."""

    version: int = 0
    generated: int = 0
    comment: str = ""
    keys: set[bytes] = field(default_factory=set)  # plain key blobs
    sha1: set[bytes] = field(default_factory=set)
    sha256: set[bytes] = field(default_factory=set)
    certs: dict[bytes, CertRevocations] = field(default_factory=dict)  # CA blob (b"": any)

    def key_revoked(self, blob: bytes) -> str | None:
        """Why the plain key ``blob`` is revoked, or None."""
        if blob in self.keys:
            return "key revoked (listed in the KRL)"
        if self.sha256 and hashlib.sha256(blob).digest() in self.sha256:
            return "key revoked (SHA256 fingerprint in the KRL)"
        if self.sha1 and hashlib.sha1(blob, usedforsecurity=False).digest() in self.sha1:
            return "key revoked (SHA1 fingerprint in the KRL)"
        return None

    def cert_revoked(self, ca: bytes, serial: int, key_id: str) -> str | None:
        """Why a certificate from CA ``ca`` (its public blob) is revoked, or None.

        As OpenSSH: serial 0 (a CA that gives none) is never revoked by serial.
        """
        for scope in (ca, b""):
            entry = self.certs.get(scope)
            if entry is None:
                continue
            where = "for this CA" if scope else "for any CA"
            if serial and scope and entry.serial_revoked(serial):
                return f"certificate serial {serial} revoked {where} in the KRL"
            if key_id in entry.key_ids:
                return f"certificate key id revoked {where} in the KRL"
        return None


def is_krl(data: bytes) -> bool:
    return data.startswith(MAGIC)


def parse(data: bytes) -> KRL:
    """Parse a KRL; :class:`KRLError` for anything malformed or unsupported."""
    r = _Reader(data, "KRL header")
    if r._take(len(MAGIC)) != MAGIC:
        raise KRLError("not an OpenSSH KRL (bad magic)")
    if (fmt := r.uint32()) != FORMAT_VERSION:
        raise KRLError(f"KRL format version {fmt} is not supported (only {FORMAT_VERSION})")
    krl = KRL(version=r.uint64(), generated=r.uint64())
    r.uint64()  # flags: none defined
    r.string()  # reserved
    krl.comment = r.string().decode("utf-8", "replace")
    ranges: dict[bytes, list[tuple[int, int]]] = {}
    while not r.done():
        r.what = "KRL section"
        kind = r.byte()
        if kind == SECTION_SIGNATURE:
            raise KRLError("signed KRLs are not supported (OpenSSH 9.4 and later refuse them too)")
        body = _Reader(r.string(), _SECTION_NAMES.get(kind, "KRL section"))
        if kind == SECTION_CERTIFICATES:
            _certificates(body, krl, ranges)
        elif kind == SECTION_EXPLICIT_KEY:
            _strings(body, krl.keys, None)
        elif kind == SECTION_FINGERPRINT_SHA1:
            _strings(body, krl.sha1, 20)
        elif kind == SECTION_FINGERPRINT_SHA256:
            _strings(body, krl.sha256, 32)
        elif kind == SECTION_EXTENSION:
            _extension(body)
        else:
            raise KRLError(f"unknown KRL section type {kind}")
    for ca, spans in ranges.items():
        entry = krl.certs[ca]
        entry._index()
        for low, high in sorted(spans):
            if entry.range_ends and low <= entry.range_ends[-1] + 1:
                entry.range_ends[-1] = max(entry.range_ends[-1], high)
            else:
                entry.range_starts.append(low)
                entry.range_ends.append(high)
    return krl


_SECTION_NAMES = {
    SECTION_CERTIFICATES: "certificate section",
    SECTION_EXPLICIT_KEY: "explicit key section",
    SECTION_FINGERPRINT_SHA1: "SHA1 fingerprint section",
    SECTION_FINGERPRINT_SHA256: "SHA256 fingerprint section",
    SECTION_EXTENSION: "extension section",
}


def _strings(body: _Reader, into: set[bytes], size: int | None) -> None:
    if body.done():
        raise KRLError(f"empty {body.what}")
    while not body.done():
        item = body.string()
        if size is not None and len(item) != size:
            raise KRLError(f"{body.what}: a {len(item)}-byte hash (expected {size})")
        if size is None and not item:
            raise KRLError(f"{body.what}: an empty key")
        into.add(item)


def _extension(body: _Reader) -> None:
    name = body.string().decode("utf-8", "replace")
    critical = body.boolean()
    body.string()
    if critical:
        raise KRLError(f"critical KRL extension {name!r} is not supported")


def _certificates(body: _Reader, krl: KRL, ranges: dict[bytes, list[tuple[int, int]]]) -> None:
    ca = body.string()
    body.string()  # reserved
    entry = krl.certs.setdefault(ca, CertRevocations())
    spans = ranges.setdefault(ca, [])
    while not body.done():
        kind = body.byte()
        sub = _Reader(body.string(), "certificate subsection")
        if kind == CERT_SERIAL_LIST:
            if len(sub.data) % 8:
                raise KRLError("truncated certificate subsection")
            entry.serials.update(n for (n,) in struct.iter_unpack(">Q", sub.data))
            continue
        elif kind == CERT_SERIAL_RANGE:
            low, high = sub.uint64(), sub.uint64()
            if low > high:
                raise KRLError(f"bad certificate serial range {low}-{high}")
            spans.append((low, high))
        elif kind == CERT_SERIAL_BITMAP:
            offset = sub.uint64()
            bits = sub.string()
            if bits and bits[0] & 0x80:
                raise KRLError("negative certificate serial bitmap")
            if len(bits) > MAX_BITMAP_BYTES:
                raise KRLError("certificate serial bitmap too large")
            entry.bitmaps.append((offset, bits))
        elif kind == CERT_KEY_ID:
            if sub.done():
                raise KRLError("empty certificate key id section")
            while not sub.done():
                entry.key_ids.add(sub.string().decode("utf-8", "surrogateescape"))
        elif kind == CERT_EXTENSION:
            _extension(sub)
            continue
        else:
            raise KRLError(f"unknown certificate subsection type {kind:#x}")
        if not sub.done():
            raise KRLError("trailing bytes in a certificate subsection")
    if ca == b"" and (entry.serials or spans or entry.bitmaps):
        # OpenSSH refuses serials for "any CA": a serial means nothing without its CA.
        raise KRLError("certificate serials revoked without naming their CA")
