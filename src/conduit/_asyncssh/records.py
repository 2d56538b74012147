"""asyncssh's SFTP records for a listing, built without their ``__init__``'s loop.

A listing answers each entry with an ``SFTPName`` holding an ``SFTPAttrs``.
asyncssh's ``Record.__init__`` calls ``setattr`` for every field's default
and then for every argument: ~30 calls per entry, ~5.5 µs of the ~6 µs a
listed small file's name and attributes cost (more than the policy's answer
about it); the empty attributes of an SFTP v3 OPEN (every download's) cost
as much. The records keep their fields in an ordinary instance ``__dict__``
(``_RecordMeta`` sets ``__slots__`` to the defaults after the class exists,
so it makes no slots), so a record is made by filling that dict from the
class's defaults at once: the same fields, the same values, the same bytes.

Checked when imported: a record built this way must equal asyncssh's own,
field for field, or the constructors are used instead (and the pin test
fails on any change to ``Record.__init__`` or ``_RecordMeta.__new__``).
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh import misc

USES: dict[str, Any] = {
    "Record.__init__": misc.Record.__init__,
    "_RecordMeta.__new__": misc._RecordMeta.__new__,
}

_ATTRS_DEFAULTS: dict[str, object] = dict(asyncssh.SFTPAttrs.__slots__)
_NAME_DEFAULTS: dict[str, object] = dict(asyncssh.SFTPName.__slots__)
_new = object.__new__


def _fast_attrs(size: int, permissions: int, atime: int, mtime: int) -> asyncssh.SFTPAttrs:
    record = _new(asyncssh.SFTPAttrs)
    fields = record.__dict__
    fields.update(_ATTRS_DEFAULTS)
    fields.update(size=size, permissions=permissions, atime=atime, mtime=mtime)
    fields.update(uid=0, gid=0, nlink=1)
    return record


def _fast_name(filename: bytes, attrs: asyncssh.SFTPAttrs) -> asyncssh.SFTPName:
    record = _new(asyncssh.SFTPName)
    fields = record.__dict__
    fields.update(_NAME_DEFAULTS)
    fields.update(filename=filename, attrs=attrs)
    return record


def _fast_empty() -> asyncssh.SFTPAttrs:
    record = _new(asyncssh.SFTPAttrs)
    record.__dict__.update(_ATTRS_DEFAULTS)
    return record


def _slow_attrs(size: int, permissions: int, atime: int, mtime: int) -> asyncssh.SFTPAttrs:
    return asyncssh.SFTPAttrs(
        size=size, permissions=permissions, atime=atime, mtime=mtime, uid=0, gid=0, nlink=1
    )


def _slow_name(filename: bytes, attrs: asyncssh.SFTPAttrs) -> asyncssh.SFTPName:
    return asyncssh.SFTPName(filename, attrs=attrs)


def _same() -> bool:
    """Whether the quick records equal asyncssh's own (else the constructors are used)."""
    try:
        a, b = _fast_attrs(4096, 0o100644, 1, 2), _slow_attrs(4096, 0o100644, 1, 2)
        n, m = _fast_name(b"x", a), _slow_name(b"x", b)
        return (
            vars(a) == vars(b)
            and list(vars(a)) == list(vars(b))
            and vars(n).keys() == vars(m).keys()
            and all(vars(n)[k] == vars(m)[k] for k in vars(n) if k != "attrs")
            and all(a.encode(v) == b.encode(v) for v in (3, 4, 5, 6))
            and list(vars(_fast_empty()).items()) == list(vars(asyncssh.SFTPAttrs()).items())
        )
    except Exception:
        return False


QUICK = _same()
#: ``SFTPAttrs`` of a listed file or folder: no real owner, one link.
listed_attrs = _fast_attrs if QUICK else _slow_attrs
#: ``SFTPName`` of a listed entry.
listed_name = _fast_name if QUICK else _slow_name
#: ``SFTPAttrs()``: what asyncssh decodes from attributes with no flags set
#: (an SFTP v3 OPEN for reading, see sftplean).
empty_attrs = _fast_empty if QUICK else asyncssh.SFTPAttrs
