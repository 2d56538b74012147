"""Events into the audit journal, echoed to the console's ``conduit.audit`` logger."""

from __future__ import annotations

import logging
from typing import Any

from conduit.audit import Auditor
from conduit.audit.events import EventType

#: (type, outcome) pairs remembered with their console level: a few dozen; bounded.
LEVELS_MAX = 1024


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
        # (type, outcome) -> the console level of its echo, 0 for none: worked
        # out once per pair, not per record
        self._levels: dict[tuple[str, str], int] = {}

    @property
    def available(self) -> bool:
        return self.auditor.available

    async def record(
        self, type: str, outcome: str, *, durable: bool = True, hold: bool = False, **fields: Any
    ) -> int:
        return await self.record_fields(type, outcome, fields, durable=durable, hold=hold)

    async def record_fields(
        self,
        type: str,
        outcome: str,
        fields: dict[str, Any],
        *,
        durable: bool = True,
        hold: bool = False,
    ) -> int:
        """:meth:`record` with the fields as a dict (not changed here): a caller
        that has them in one already (``Operations``) spares building another."""
        seq = await self.auditor.record_fields(
            type, outcome, fields, durable=durable, hold=hold, skip_none=True
        )
        level = self._levels.get((type, outcome))
        if level is None:
            level = self._level(type, outcome)
        if level and self.log.isEnabledFor(level):
            shown = " ".join(f"{k}={v!r}" for k, v in fields.items() if v is not None)
            self.log.log(level, "#%d %s %s %s", seq, type, outcome, shown)
        return seq

    def _level(self, type: str, outcome: str) -> int:
        """The console level of a (type, outcome)'s echo (0: not echoed here)."""
        if type in self.ECHOED_ELSEWHERE:
            level = 0
        elif outcome in ("started", "intent", "success") and type.startswith(("file.", "dir.")):
            # Routine file events go to DEBUG (shown by `serve -v`): a console line
            # per small file cost more than its journal record; the journal and
            # `conduit audit tail -f` have every one.
            level = logging.DEBUG
        else:
            level = logging.INFO
        if len(self._levels) >= LEVELS_MAX:
            self._levels.clear()
        self._levels[(str(type), str(outcome))] = level
        return level
