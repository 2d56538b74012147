"""The policy's time to the minute, worked out once per minute.

Decisions depend on the time only through conduit windows, which have minute
resolution, and the gateway asks "which minute is it?" several times per
file (a download: at its open, before its first read, before each read;
``gateway.guard.moment``). Turning the clock's UTC time into the gateway's
time zone cost ~1.4 µs of the ~1.7 µs each question took. So the local minute
is kept with the UTC interval it covers, ``[start, start + 60 s)``: the clock
is still read every time (a test's clock, a clock replaced, a minute that
turns are all seen at once) and only a time outside that interval is
converted again.

Within one local minute the zone's offset cannot change: offsets change at
whole local minutes (tzdata's transitions are at whole minutes of the old
offset), so the UTC interval of a local minute holds one offset throughout.
An offset with seconds (local mean time, before ~1940) is not kept either,
though the interval would hold for it too: belt and braces.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

MINUTE = timedelta(minutes=1)


class LocalMinute:
    """A clock's time in ``zone`` to the minute; the last minute's answer kept."""

    def __init__(self, zone: tzinfo) -> None:
        self._zone = zone
        # (start, end, minute): one tuple, so a thread reading it sees a matching set
        self._kept: tuple[datetime, datetime, datetime] | None = None

    def __call__(self, now: datetime) -> datetime:
        """``now.astimezone(zone)`` without its seconds (``now``: the clock's time)."""
        kept = self._kept
        if kept is not None and now.tzinfo is not None and kept[0] <= now < kept[1]:
            return kept[2]
        local = now.astimezone(self._zone)
        minute = local.replace(second=0, microsecond=0)
        offset = local.utcoffset()
        if (
            now.tzinfo is not None
            and offset is not None
            and not offset.seconds % 60 + offset.microseconds
        ):
            start = now - (local - minute)
            self._kept = (start, start + MINUTE, minute)
        return minute
