"""The gateway's task that keeps the search index caught up with the journal.

The search index is derived data and yields to transfers: it catches up once
the journal has been quiet for INDEX_POLL, and at least every INDEX_MAX_LAG
under sustained load. On a sequential stream of small files indexing as it
went took ~0.2 ms of CPU per file, a tenth of the gateway's; ``conduit audit
search`` catches up itself before it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from conduit.audit.journal import Journal

if TYPE_CHECKING:
    from conduit.audit.index import Index

log = logging.getLogger("conduit.audit")

INDEX_POLL = 1.0
INDEX_MAX_LAG = 30.0
#: Records indexed per refresh at most (~0.2 s of CPU): a gateway that comes
#: back to a long unindexed journal catches up a slice per quiet second.
INDEX_SLICE = 5_000


class Indexer:
    """Runs the index refreshes of one open journal until :meth:`stop`."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._index: Index | None = None
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="audit-index")

    def halt(self) -> None:
        """Start no refresh from now on (the journal is closing)."""
        self._stop.set()

    async def stop(self) -> None:
        """Ask a running refresh to stop, and wait for the task to end."""
        if self._index is not None:
            self._index.stopping = True
        self._stop.set()
        await self._task

    async def _loop(self) -> None:
        from conduit.audit.index import Index

        seen, indexed, waited, refreshing = self.journal.seq, -1, 0.0, False
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(INDEX_POLL):
                        await self._stop.wait()
                waited += INDEX_POLL
                quiet, seen = self.journal.seq == seen, self.journal.seq
                if self._stop.is_set() or seen == indexed:
                    continue
                if not (quiet or waited >= INDEX_MAX_LAG):
                    continue
                waited = 0.0
                try:
                    if self._index is None:
                        self._index = await asyncio.to_thread(
                            Index, self.journal.directory, self.journal.recall
                        )
                    refreshing = True
                    added = await asyncio.to_thread(self._index.refresh, INDEX_SLICE)
                    refreshing = False
                    if added < INDEX_SLICE:
                        indexed = seen
                except Exception as exc:  # derived data: never let it hurt the gateway
                    refreshing = False  # the refresh ended, with an error
                    log.warning("audit index refresh failed: %s", exc)
        finally:
            # stop() asks a running refresh to stop and waits for it; only a
            # cancelled task can get here with one still running in its thread,
            # and then the connection must be left to it, not closed under it.
            if self._index is not None and not refreshing:
                self._index.close()
