"""Conduit time windows: ``"Sat 02:00-06:00"``, ``"Mon-Fri 22:00-05:00"``, ...

Syntax of one window: ``[DAYS] HH:MM-HH:MM`` where DAYS is a day (``Mon``),
a range (``Mon-Fri``, ``Fri-Mon`` wraps), a comma list of those
(``Sat,Sun`` or ``Mon-Wed,Fri``) or ``daily``; no DAYS means every day.
Day names are the English three-letter abbreviations, any case.

A window *starts* on each listed day at the first time and ends at the
second; an end at or before the start means the next day (``Fri 22:00-05:00``
runs into Saturday 05:00). ``24:00`` is allowed as an end. Start inclusive,
end exclusive, minute resolution, evaluated on the wall clock of the
gateway's time zone (a DST shift moves the window with the clock).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY

_WINDOW = re.compile(
    r"^\s*(?:(?P<days>[A-Za-z][A-Za-z,\- ]*?)\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)


class WindowError(ValueError):
    """A window string that cannot be parsed; the message says why."""


@dataclass(frozen=True, slots=True)
class Window:
    """A parsed window: a minute-of-week bitmap, so a check is one index."""

    text: str
    minutes: bytes  # MINUTES_PER_WEEK entries, 1 inside the window

    def contains(self, minute_of_week: int) -> bool:
        return self.minutes[minute_of_week % MINUTES_PER_WEEK] == 1


def _minutes(text: str, *, end: bool) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        raise WindowError(f"{text!r} is not a time of day (00:00-23:59, 24:00 as an end)")
    return hours * 60 + minutes


def _day(name: str) -> int:
    key = name.strip().lower()
    for index, day in enumerate(DAYS):
        if key in (day, _FULL_DAYS[index]):
            return index
    raise WindowError(f"{name.strip()!r} is not a day (Mon, Tue, ... Sun)")


def _days(text: str | None) -> list[int]:
    if text is None or text.strip().lower() in ("daily", "*"):
        return list(range(7))
    days: list[int] = []
    for item in text.split(","):
        first, sep, last = item.partition("-")
        if not sep:
            days.append(_day(first))
            continue
        start, stop = _day(first), _day(last)
        span = (stop - start) % 7
        days.extend((start + k) % 7 for k in range(span + 1))
    return days


def parse_window(text: str) -> Window:
    """Parse one window string; raises :class:`WindowError` with the reason."""
    match = _WINDOW.match(text)
    if match is None:
        raise WindowError(
            f"{text!r} is not a window like 'Sat 02:00-06:00' or 'Mon-Fri 22:00-05:00'"
        )
    start = _minutes(match["start"], end=False)
    end = _minutes(match["end"], end=True)
    if start == end:
        raise WindowError(f"{text!r} is empty (start equals end; use 00:00-24:00 for a whole day)")
    length = (end - start) % MINUTES_PER_DAY or MINUTES_PER_DAY
    bitmap = bytearray(MINUTES_PER_WEEK)
    for day in _days(match["days"]):
        first = day * MINUTES_PER_DAY + start
        for minute in range(first, first + length):
            bitmap[minute % MINUTES_PER_WEEK] = 1
    return Window(text, bytes(bitmap))


def parse_windows(value: str | list[str] | None) -> tuple[Window, ...]:
    """The windows of one conduit (empty: always open)."""
    if value is None:
        return ()
    texts = [value] if isinstance(value, str) else value
    return tuple(parse_window(t) for t in texts)
