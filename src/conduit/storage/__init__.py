"""Storage backends behind one interface: ``local`` (confined, atomic)."""

from conduit.storage.base import (
    Backend,
    Entry,
    Fault,
    ReadHandle,
    RelPath,
    Stat,
    StorageError,
    WriteHandle,
)
from conduit.storage.local import LocalBackend

__all__ = [
    "Backend",
    "Entry",
    "Fault",
    "LocalBackend",
    "ReadHandle",
    "RelPath",
    "Stat",
    "StorageError",
    "WriteHandle",
]
