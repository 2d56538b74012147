"""Storage backends behind one interface: ``local`` (confined, atomic)."""

from conduit.storage.base import Backend, Entry, ReadHandle, RelPath, Stat, WriteHandle
from conduit.storage.local import LocalBackend

__all__ = [
    "Backend",
    "Entry",
    "LocalBackend",
    "ReadHandle",
    "RelPath",
    "Stat",
    "WriteHandle",
]
