"""The minute a decision is taken in, kept per minute, is the minute the clock says.

:class:`~conduit.policy.clock.LocalMinute` converts a clock's time to the
gateway's zone only when it leaves the last minute's UTC interval. Hostile
cases: daylight-saving changes both ways (a repeated and a skipped hour),
zones with 30- and 45-minute offsets and a 30-minute DST shift, a time
zone's local mean time (an offset with seconds), times going backwards, and
a clock replaced by one that returns naive times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conduit.config import Op
from conduit.policy import Policy, Request
from conduit.policy.clock import LocalMinute

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # DST moves the clock by 30 minutes
    "Asia/Kathmandu",  # +05:45
    "America/St_Johns",  # -03:30 / -02:30
    "Europe/Amsterdam",  # +00:19:32 local mean time until 1937
    "UTC",
]
#: Instants around offset changes (and plain ones), as UTC times.
AROUND = [
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Berlin springs forward
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Berlin falls back: 02:00-03:00 twice
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # New York springs forward
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # New York falls back
    datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Lord Howe: 02:00 -> 01:30
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Lord Howe: 02:00 -> 02:30
    datetime(2026, 12, 4, 19, 59, 59, 999999, tzinfo=UTC),
    datetime(1930, 6, 1, 12, 0, tzinfo=UTC),  # Amsterdam's +00:19:32
]

times = st.builds(
    lambda base, delta: base + timedelta(microseconds=delta),
    st.sampled_from(AROUND),
    st.integers(-3 * 3600 * 10**6, 3 * 3600 * 10**6),
)


def direct(now: datetime, zone: ZoneInfo) -> datetime:
    """What ``moment`` computed before: the time in the zone, seconds dropped."""
    return now.astimezone(zone).replace(second=0, microsecond=0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ZONES), st.lists(times, min_size=1, max_size=40))
def test_the_kept_minute_is_the_clock_minute(zone_name: str, instants: list[datetime]) -> None:
    zone = ZoneInfo(zone_name)
    minute = LocalMinute(zone)
    for now in instants:
        for later in (now, now + timedelta(seconds=1), now + timedelta(seconds=59)):
            got, want = minute(later), direct(later, zone)
            assert (got, got.utcoffset(), got.fold) == (want, want.utcoffset(), want.fold)


@pytest.mark.parametrize("zone_name", ZONES)
def test_every_seven_seconds_around_each_change(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    minute = LocalMinute(zone)
    for base in AROUND:
        for second in range(-7200, 7200, 7):
            now = base + timedelta(seconds=second, microseconds=second * 13 % 10**6)
            got, want = minute(now), direct(now, zone)
            assert (got, got.utcoffset(), got.fold) == (want, want.utcoffset(), want.fold)


def test_a_replaced_or_naive_clock_is_read_as_it_is(example_config: object) -> None:
    """``cli explain`` and tests replace ``policy.clock``; the next question reads it."""
    times = [datetime(2026, 11, 28, 2, 30, 10, tzinfo=UTC)]
    policy = Policy(example_config, clock=lambda: times[0])  # type: ignore[arg-type]
    first = policy.minute()
    policy.clock = lambda: datetime(2026, 11, 28, 9, 0, 5, tzinfo=UTC)
    assert policy.minute() != first
    assert policy.minute() == policy.now().replace(second=0, microsecond=0)
    naive = datetime(2026, 11, 28, 9, 0, 30)
    policy.clock = lambda: naive
    assert policy.minute() == naive.astimezone(policy.timezone).replace(second=0, microsecond=0)
    request = Request("bob", ip_address("10.3.0.5"), Op.LIST, "/")
    policy.decide(request)  # a naive clock decides as before (no comparison with a kept time)
