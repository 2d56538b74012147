"""While the journal cannot be written: why, since when, and what was held.

The auditor goes down on a failed append and comes back on the next one
that succeeds. Meanwhile, with ``on_failure = "closed"``, an event is
refused (and counted), except the outcome of an effect whose durable intent
was written; with ``"alert"`` every event is held, at most ``HELD_MAX`` (the
oldest dropped and counted). The first record written once the journal is
back is the ``audit.alert`` that says how long it was down and what was
refused, held and dropped; the held events follow it.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from conduit.audit.events import EventType
from conduit.audit.journal import Item

log = logging.getLogger("conduit.audit")

HELD_MAX = 100_000


class Outage:
    """The journal's down state; ``reason`` is None while it can be written."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.since = 0.0
        self.refused = 0
        self.held: deque[Item] = deque()
        self.dropped = 0

    def went_down(self, exc: Exception, directory: object) -> None:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = f"audit journal {directory} cannot be written: {detail}"
        if self.reason is None:
            log.error("%s", reason)
            self.since = time.monotonic()
        self.reason = reason

    def hold(self, item: Item) -> None:
        if len(self.held) >= HELD_MAX:
            self.held.popleft()
            self.dropped += 1
        self.held.append(item)

    def back(self, on_failure: str) -> list[Item]:
        """The alert that the journal is writable again, then the held events:
        what the first append after an outage writes before its own records."""
        gone = time.monotonic() - self.since
        what = (
            f"{self.refused} event(s) were refused, {len(self.held)} held outcome(s) follow"
            if on_failure == "closed"
            else f"{len(self.held)} held event(s) follow, {self.dropped} dropped"
        )
        reason = f"journal writable again after {gone:.1f} s (it failed: {self.reason}); {what}"
        alert: Item = (EventType.AUDIT_ALERT, "success", {"reason": reason}, None)
        return [alert, *self.held]

    def ended(self) -> None:
        """The alert and the held events are written: the journal is up."""
        log.warning("audit journal writable again")
        self.reason = None
        self.held.clear()
        self.refused = self.dropped = 0
