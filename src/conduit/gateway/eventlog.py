"""Events into the audit journal, echoed to the console's ``conduit.audit`` logger."""

from __future__ import annotations

import logging
from typing import Any

from conduit.audit import Auditor
from conduit.audit.events import EventType


class EventLog:
    """Events into the audit journal (the system of record), echoed to the
    ``conduit.audit`` logger for whoever watches the console: sessions,
    refusals, failures and alerts at INFO, successful file operations at DEBUG."""

    #: Shown on the console by their own code, in one line of their own (reloading.py,
    #: devicewatch.py; rate-limited there), not echoed twice.
    ECHOED_ELSEWHERE = frozenset(
        {
            EventType.DEVICE_CONNECT,
            EventType.DEVICE_CLOSE,
            EventType.POLICY_RELOAD,
            EventType.SESSION_REVOKE,
        }
    )

    def __init__(self, auditor: Auditor) -> None:
        self.auditor = auditor
        self.log = logging.getLogger("conduit.audit")

    @property
    def available(self) -> bool:
        return self.auditor.available

    async def record(
        self, type: str, outcome: str, *, durable: bool = True, hold: bool = False, **fields: Any
    ) -> int:
        seq = await self.auditor.record_fields(
            type, outcome, fields, durable=durable, hold=hold, skip_none=True
        )
        if type in self.ECHOED_ELSEWHERE:
            return seq
        # Routine file events go to DEBUG (shown by `serve -v`): a console line
        # per small file cost more than its journal record; the journal and
        # `conduit audit tail -f` have every one.
        routine = outcome in ("started", "intent", "success") and type.startswith(("file.", "dir."))
        level = logging.DEBUG if routine else logging.INFO
        if self.log.isEnabledFor(level):
            shown = " ".join(f"{k}={v!r}" for k, v in fields.items() if v is not None)
            self.log.log(level, "#%d %s %s %s", seq, type, outcome, shown)
        return seq
