"""Write-ahead auditing: no effect on storage without its durable record.

Every effect on storage (an upload's commit, delete, rename, mkdir, rmdir,
set times) first writes a durable ``intent`` record naming who does what
(for an upload: its SHA-256 and size); only then does the effect happen, and
its ``success``/``failed`` outcome follows without an fsync of its own: it
rides the next group flush. That keeps one durable flush per file on the
client's path, where recording the outcome durably used to be that flush.

No intent record, no effect: the client gets the refusal and storage is
untouched. An outcome is never refused (the auditor holds it while the
journal cannot be written) and never turns a done effect into an error for
the client; if the process dies before it is written, start-up recovery
(:mod:`conduit.audit.recovery`) settles the intent from what is on disk.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from conduit.audit import faults
from conduit.audit.events import EventOutcome, EventType
from conduit.errors import StorageError
from conduit.gateway.guard import Guard
from conduit.gateway.vfs import VirtualPath
from conduit.policy import Decision
from conduit.transfer import Upload
from conduit.transfer.pipeline import Intend

log = logging.getLogger("conduit.audit")
T = TypeVar("T")


class WriteAhead(Guard):
    """The write-ahead half of :class:`~conduit.gateway.operations.Operations`."""

    def _target(self, path: VirtualPath) -> dict[str, Any]:
        raise NotImplementedError

    async def settled(self, type: str, outcome: str, **fields: Any) -> None:
        """The outcome of an effect whose intent is durable: no fsync, never refused."""
        try:
            await self.record(type, outcome, durable=False, hold=True, **fields)
        except StorageError as exc:
            log.error("outcome %s/%s not journalled (recovery settles it): %s", type, outcome, exc)

    async def effect(
        self,
        type: str,
        fields: dict[str, Any],
        action: Callable[[], Awaitable[T]],
        *,
        intent: str | None = None,
    ) -> T:
        """The intent durable, then ``action()``, then its outcome.

        ``intent``: the id of an intent record already written that covers
        this effect (an upload's commit intent names the times set after it);
        then no new intent is written.
        """
        if intent is None:
            intent = secrets.token_hex(8)
            await self.record(type, EventOutcome.INTENT, intent=intent, **fields)
        await faults.hold("after-intent", type)
        try:
            result = await action()
        except StorageError as exc:
            await self.settled(type, EventOutcome.FAILED, intent=intent, error=exc.detail, **fields)
            raise
        await faults.hold("after-effect", type)
        await self.settled(type, EventOutcome.SUCCESS, intent=intent, **fields)
        return result

    def commit_intent(self, path: VirtualPath, decision: Decision, transfer: str) -> Intend:
        """The durable record an upload writes before its rename into place: the
        upload's one fsync (its ``started`` before and outcome after need none)."""

        async def intend(sha256: str, size: int, times: tuple[float, float] | None) -> None:
            at: dict[str, Any] = {} if times is None else {"atime": times[0], "mtime": times[1]}
            await self.record(
                EventType.FILE_UPLOAD,
                EventOutcome.INTENT,
                transfer=transfer,
                path=path.text,
                sha256=sha256,
                bytes=size,
                rule=decision.rule,
                **at,
                **self._target(path),
            )

        return intend

    @staticmethod
    def covering(upload: Upload | None, atime: float, mtime: float) -> str | None:
        """The intent id of ``upload`` if its commit intent named these times."""
        if upload is not None and upload.times == (atime, mtime):
            return upload.transfer
        return None
