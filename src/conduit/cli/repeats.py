"""The console says a repeated line once, then how often it came back.

Some faults are retried on a timer and warn on every try: a SIEM that is down
is retried every few seconds ("SIEM sink ... Connect call failed"), a search
index that cannot be refreshed every second. The journal is not flooded (its
``audit.alert`` records mark the change of state, not each try), but the
console was: the same line every second buries the one line that matters,
and an operator watching the console learns nothing from the 3,600th copy.

:class:`RepeatFilter` sits on the console handler. The first occurrence of a
line (same logger, level and text) is printed; copies within ``window``
seconds are counted, not printed; once the window is over, one line says
``... [repeated N more times in the last 60 s]``, and the counting starts
again. A line that stops repeating is forgotten after a quiet window, so its
next occurrence prints at once. ``serve`` calls :meth:`flush` every few
seconds so a count is reported even when nothing else is logged, and once
more at exit. Events with a sequence number (every journalled event) never
repeat, so they always print. Memory is bounded (``max_lines`` distinct lines
tracked; the oldest is summarised and dropped first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 60.0
MAX_LINES = 1024
_SUMMARY = "_conduit_repeat_summary"

Key = tuple[str, int, str]


@dataclass
class _Seen:
    since: float
    count: int
    last: logging.LogRecord


class RepeatFilter(logging.Filter):
    """Print a repeated console line once per ``window``, with the count of the others."""

    def __init__(
        self,
        handler: logging.Handler,
        window: float = WINDOW,
        *,
        max_lines: int = MAX_LINES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.window = window
        self.max_lines = max_lines
        self.clock = clock
        self._seen: OrderedDict[Key, _Seen] = OrderedDict()
        self._lock = threading.Lock()  # records can come from worker threads
        handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY, False):
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = self.clock()
        due: list[logging.LogRecord] = []
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.since < self.window:
                seen.count += 1
                seen.last = record
                return False
            if seen is not None and seen.count:
                due.append(self._summary(seen, now))
            self._seen[key] = _Seen(now, 0, record)
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_lines:
                _, oldest = self._seen.popitem(last=False)
                if oldest.count:
                    due.append(self._summary(oldest, now))
        for summary in due:  # outside the lock: handle() runs this filter again
            self.handler.handle(summary)
        return True

    def flush(self, final: bool = False) -> None:
        """Report counts whose window is over (every count, if ``final``); forget quiet lines."""
        now = self.clock()
        due: list[logging.LogRecord] = []
        with self._lock:
            for key, seen in list(self._seen.items()):
                if not final and now - seen.since < self.window:
                    continue
                if seen.count:
                    due.append(self._summary(seen, now))
                    seen.since, seen.count = now, 0  # keep counting the next window's copies
                else:
                    del self._seen[key]
            if final:
                self._seen.clear()
        for summary in due:
            self.handler.handle(summary)

    @staticmethod
    def _summary(seen: _Seen, now: float) -> logging.LogRecord:
        last = seen.last
        record = logging.makeLogRecord(
            {
                "name": last.name,
                "levelno": last.levelno,
                "levelname": last.levelname,
                "msg": "%s [repeated %d more time%s in the last %.0f s]",
                "args": (
                    last.getMessage(),
                    seen.count,
                    "" if seen.count == 1 else "s",
                    max(now - seen.since, 1.0),
                ),
                _SUMMARY: True,
            }
        )
        return record
