"""Records about clients that never logged in, in aggregate and within a budget.

Failed logins and refused connections cost an attacker nothing and, one
record each with an fsync, grew the journal by 1.3 MB/s (200 connections x
8 unknown keys with 1 KB user names). Here:

* the first such event from a source in each interval is recorded as it is
  (so an operator sees a flood start), the rest are counted and recorded as
  one summary per (source, user, method, reason) at the end of the interval,
  with ``count``, ``first`` and ``last`` (UTC);
* user names are cut to :data:`MAX_USER_GIVEN` characters with a marker that
  says how much was cut;
* none of these records waits for an fsync of its own (the journal's next
  durable write or periodic sync makes them durable);
* below ``min_free`` bytes free on the journal's disk they are shed (counted,
  not written), so the room left goes to transfers; an ``audit.alert`` (and a
  console line) says when shedding starts and when it ends, with the count.

How many distinct summaries an interval can hold is bounded; beyond that,
events are counted under ``(others)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conduit.audit.events import EventType, utc_now

log = logging.getLogger("conduit.audit")

#: Longest user name recorded as given (Linux allows 32; OpenSSH's limit is 1,024).
MAX_USER_GIVEN = 64
#: Distinct summaries (and sources recorded individually) per interval.
MAX_KEYS = 4096
#: How often free space on the journal's disk is looked at, at most (seconds).
FREE_SPACE_EVERY = 1.0
OTHERS = "(others)"

Record = Callable[..., Coroutine[Any, Any, Any]]


def cap_user(name: str) -> str:
    """``name`` cut to MAX_USER_GIVEN characters, saying how many were cut."""
    if len(name) <= MAX_USER_GIVEN:
        return name
    return f"{name[:MAX_USER_GIVEN]}...[{len(name) - MAX_USER_GIVEN} more characters]"


@dataclass
class _Tally:
    count: int = 0
    first: str = ""
    last: str = ""


@dataclass
class _Window:
    seen: set[str] = field(default_factory=set)
    tallies: dict[tuple[str, ...], _Tally] = field(default_factory=dict)


class NoiseLog:
    """Aggregates ``auth.failure`` and ``connection.refused`` records per source."""

    def __init__(
        self,
        record: Record,
        journal_dir: Path,
        *,
        interval: float,
        min_free: int,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self._record = record
        self._journal_dir = journal_dir
        self.interval = interval
        self.min_free = min_free
        self._spawn = spawn
        self._window = _Window()
        self._checked = -FREE_SPACE_EVERY
        self.shedding = False
        self.shed = 0
        self._task: asyncio.Task[None] | None = None

    # -- events ---------------------------------------------------------------

    def auth_failure(
        self, source: str, user_given: str, auth_method: str, reason: str, **fields: Any
    ) -> None:
        """A failed authentication attempt (any method)."""
        user = cap_user(user_given)
        self._note(
            EventType.AUTH_FAILURE,
            (source, user, auth_method, reason),
            dict(source=source, user_given=user, auth_method=auth_method, reason=reason),
            fields,
        )

    def refused(self, source: str, reason: str) -> None:
        """A connection dropped before it could authenticate."""
        self._note("connection.refused", (source, reason), dict(source=source, reason=reason), {})

    def _note(
        self, type: str, key: tuple[str, ...], summary: dict[str, str], detail: dict[str, Any]
    ) -> None:
        if not self._room():
            self.shed += 1
            return
        window = self._window
        first = f"{type} {key[0]}"
        now = utc_now()
        if first not in window.seen and len(window.seen) < MAX_KEYS:
            window.seen.add(first)
            self._spawn(self._write(type, **summary, **detail))
            return
        full_key = (type, *key)
        tally = window.tallies.get(full_key)
        if tally is None:
            if len(window.tallies) >= MAX_KEYS:
                full_key = (type, OTHERS)
            tally = window.tallies.setdefault(full_key, _Tally(first=now))
        tally.count += 1
        tally.last = now

    # -- summaries --------------------------------------------------------------

    async def flush(self) -> None:
        """Write one summary per tally of the interval that ends now."""
        window, self._window = self._window, _Window()
        self._room()  # raise or clear the watermark alert even when nothing came
        if self.shedding:
            self.shed += sum(t.count for t in window.tallies.values())
            return
        for (type, *key), tally in window.tallies.items():
            if type == EventType.AUTH_FAILURE and len(key) == 4:
                source, user, method, reason = key
                fields: dict[str, Any] = dict(
                    source=source, user_given=user, auth_method=method, reason=reason
                )
            elif len(key) == 2:
                fields = dict(source=key[0], reason=key[1])
            else:
                fields = dict(source=OTHERS, reason=f"more than {MAX_KEYS} distinct summaries")
            await self._write(
                type,
                **fields,
                count=tally.count,
                summary=True,
                first=tally.first,
                last=tally.last,
            )

    async def _write(self, type: str, **fields: Any) -> None:
        # not durable on its own: the journal's next durable write or
        # periodic sync covers it (no fsync per unauthenticated client)
        await self._record(type, "denied", durable=False, **fields)

    async def run(self) -> None:
        """Flush every interval until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception as exc:  # the journal may be down: try next interval
                log.warning("could not write failed-login summaries: %s", exc)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def close(self) -> None:
        """Stop the timer and write what the current interval holds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self.shedding:
            await self._record(
                EventType.AUDIT_ALERT, "success", reason=self._resumed("the gateway stops")
            )

    # -- the free-space watermark --------------------------------------------------

    def _room(self) -> bool:
        """False while the journal's disk is below the watermark (cached a second)."""
        now = time.monotonic()
        if now - self._checked < FREE_SPACE_EVERY:
            return not self.shedding
        self._checked = now
        free = self._free()
        low = free is not None and free < self.min_free
        if low and not self.shedding:
            self.shedding = True
            reason = (
                f"free space on the journal's disk ({free} bytes) is below journal_min_free "
                f"({self.min_free} bytes): records about unauthenticated clients are shed, "
                "transfers are still journalled"
            )
            log.warning("%s", reason)
            self._spawn(self._record(EventType.AUDIT_ALERT, "failed", reason=reason))
        elif not low and self.shedding:
            reason = self._resumed(f"free space is back ({free} bytes)")
            self._spawn(self._record(EventType.AUDIT_ALERT, "success", reason=reason))
        return not self.shedding

    def _resumed(self, why: str) -> str:
        self.shedding = False
        shed, self.shed = self.shed, 0
        reason = f"{why}: records about unauthenticated clients resume; {shed} were shed"
        log.warning("%s", reason)
        return reason

    def _free(self) -> int | None:
        path = self._journal_dir
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            return shutil.disk_usage(path).free
        except OSError:
            return None
