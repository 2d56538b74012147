"""A listing's records are asyncssh's own, field for field and byte for byte.

:mod:`conduit._asyncssh.records` builds the ``SFTPName`` and ``SFTPAttrs``
of each listed entry by filling their fields at once instead of through
``Record.__init__``'s ``setattr`` loop. What the client reads must not change:
every SFTP version's encoding, every field, and the fallback to asyncssh's
constructors when a record no longer looks as expected.
"""

from __future__ import annotations

import stat

import asyncssh
import pytest
from asyncssh.packet import SSHPacket

from conduit._asyncssh import records
from conduit.gateway.listing import _name, attrs
from conduit.storage.base import Entry, Stat

STATS = [
    Stat(size=4096, mode=stat.S_IFREG | 0o644, mtime=1_764_000_000.7, atime=1_764_000_001.2),
    Stat(size=0, mode=stat.S_IFDIR | 0o755, mtime=0.0, atime=0.0),
    Stat(size=2**40 + 3, mode=stat.S_IFREG | 0o600, mtime=4_102_444_800.0, atime=1.0),
]


def asyncssh_own(st: Stat) -> asyncssh.SFTPAttrs:
    """What listing.attrs built before: asyncssh's constructor."""
    return asyncssh.SFTPAttrs(
        size=st.size,
        permissions=st.mode,
        atime=int(st.atime),
        mtime=int(st.mtime),
        uid=0,
        gid=0,
        nlink=1,
    )


def test_the_quick_records_are_in_use_on_the_pinned_asyncssh() -> None:
    assert records.QUICK
    assert records.listed_attrs is records._fast_attrs


@pytest.mark.parametrize("st", STATS)
@pytest.mark.parametrize("version", [3, 4, 5, 6])
def test_attributes_encode_as_asyncssh_own(st: Stat, version: int) -> None:
    mine, theirs = attrs(st), asyncssh_own(st)
    assert type(mine) is asyncssh.SFTPAttrs
    assert vars(mine) == vars(theirs)
    assert mine.encode(version) == theirs.encode(version)
    decoded = asyncssh.SFTPAttrs.decode(SSHPacket(mine.encode(version)), version)
    assert (decoded.size, decoded.permissions & 0o7777) == (st.size, st.mode & 0o7777)


@pytest.mark.parametrize("st", STATS)
@pytest.mark.parametrize("version", [3, 4, 5, 6])
def test_names_encode_as_asyncssh_own(st: Stat, version: int) -> None:
    entry = Entry("a name é.bin", st)
    mine = _name(entry)
    theirs = asyncssh.SFTPName(entry.name.encode("utf-8"), attrs=asyncssh_own(st))
    assert type(mine) is asyncssh.SFTPName
    assert vars(mine).keys() == vars(theirs).keys()
    assert (mine.filename, mine.longname) == (theirs.filename, theirs.longname)
    assert mine.encode(version) == theirs.encode(version)
    assert str(mine) == str(theirs) and repr(mine) == repr(theirs)


def test_a_record_that_changed_shape_falls_back_to_the_constructors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A default missing or changed (as an asyncssh upgrade might bring) is seen
    by the import-time check, which then keeps asyncssh's constructors."""
    assert records._same()
    changed = {**records._ATTRS_DEFAULTS, "type": 1}
    monkeypatch.setattr(records, "_ATTRS_DEFAULTS", changed)
    assert not records._same()
    fewer = {k: v for k, v in records._NAME_DEFAULTS.items() if k != "longname"}
    monkeypatch.setattr(records, "_ATTRS_DEFAULTS", dict(asyncssh.SFTPAttrs.__slots__))
    monkeypatch.setattr(records, "_NAME_DEFAULTS", fewer)
    assert not records._same()
