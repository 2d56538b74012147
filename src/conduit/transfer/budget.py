"""Bounded memory for upload bytes that arrive out of order.

SFTP clients pipeline writes, and a write may reach the gateway ahead of one
still missing; :class:`~conduit.transfer.pipeline.Upload` holds such bytes
until the gap fills, so the hash still covers every byte once, in order. A
client can also send only "ahead" writes on purpose and never fill the gap:
without a shared bound, 25 upload handles held 16 MiB each. A
:class:`ReorderBudget` bounds what one session holds, and its parent bounds
what all sessions hold together; a write that would exceed either is refused
(the upload fails cleanly) instead of being buffered.
"""

from __future__ import annotations


class ReorderBudget:
    """Bytes held out of order, against a limit and an optional parent budget."""

    __slots__ = ("held", "limit", "parent")

    def __init__(self, limit: int, parent: ReorderBudget | None = None) -> None:
        self.limit = limit
        self.parent = parent
        self.held = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes here and in every parent; False if any is full."""
        if self.held + size > self.limit:
            return False
        if self.parent is not None and not self.parent.take(size):
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        """Release bytes reserved with :meth:`take`."""
        self.held -= size
        if self.parent is not None:
            self.parent.give(size)
