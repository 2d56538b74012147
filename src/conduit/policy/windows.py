"""Conduit time windows: ``"Sat 02:00-06:00"``, ``"Mon-Fri 22:00-05:00"``, ``"* 08:00-17:00"``.

A window opens on each listed day at the start time. When the end is not
after the start, the window runs past midnight into the next day. Times are
read in the gateway's configured time zone. Pure: the caller passes "now".
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_SHAPE = re.compile(r"^\s*(?P<days>\S+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})\s*$")


class WindowError(ValueError):
    """A window string that does not parse."""


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int  # minutes after midnight, 1..1440
    text: str

    def contains(self, moment: dt.datetime) -> bool:
        day, minute = moment.weekday(), moment.hour * 60 + moment.minute
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        # Across midnight: the evening of a listed day, or the morning after it.
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )


def _minutes(text: str, *, end: bool) -> int:
    hours, minutes = (int(p) for p in text.split(":"))
    value = hours * 60 + minutes
    if minutes > 59 or value > 24 * 60 or (value == 24 * 60 and not end):
        raise WindowError(f"bad time {text!r}")
    return value


def _days(spec: str) -> frozenset[int]:
    if spec in ("*", "daily"):
        return frozenset(range(7))
    days: set[int] = set()
    for item in spec.split(","):
        first, _, last = item.partition("-")
        try:
            a = DAYS.index(first.capitalize())
            b = DAYS.index(last.capitalize()) if last else a
        except ValueError:
            raise WindowError(
                f"bad day {item!r} (use Mon..Sun, ranges like Mon-Fri, or *)"
            ) from None
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def parse_window(text: str) -> Window:
    match = _SHAPE.match(text)
    if not match:
        raise WindowError(f"bad window {text!r} (expected e.g. 'Sat 02:00-06:00')")
    start = _minutes(match["start"], end=False)
    end = _minutes(match["end"], end=True)
    if start == end:
        raise WindowError(f"empty window {text!r}")
    return Window(_days(match["days"]), start, end, text.strip())


def parse_windows(value: str | list[str] | None) -> tuple[Window, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    return tuple(parse_window(item) for item in items)
