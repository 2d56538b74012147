"""The start-up (and reload) sweep of the temp files a crash left in an area.

A user can make an area's tree as deep or wide as they like; start-up and
reload must neither fail on it nor wait for it, so the sweep runs in a
thread, after the listener is up. What it removes is journalled
(``storage.sweep``), not only shown on the console: it is a change to
storage. It removes only temp files of earlier processes (their tag differs
from this process's, see ``storage.localfiles``), so uploads already in
flight are safe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from conduit.audit.events import EventType
from conduit.storage import LocalBackend

log = logging.getLogger("conduit.gateway")


def sweep_in_background(
    areas: list[tuple[str, LocalBackend]], recorder: Any, stopping: threading.Event
) -> None:
    """Start the sweep of ``areas`` in a daemon thread; it stops when ``stopping`` is set."""
    loop = asyncio.get_running_loop()
    threading.Thread(
        target=_sweep, args=(areas, recorder, stopping, loop), name="conduit-sweep", daemon=True
    ).start()


def _sweep(
    areas: list[tuple[str, LocalBackend]],
    recorder: Any,
    stopping: threading.Event,
    loop: asyncio.AbstractEventLoop,
) -> None:
    for name, backend in areas:
        if stopping.is_set():
            return
        try:
            result = backend.cleanup_orphans(stop=stopping.is_set)
        except OSError as exc:  # the area was closed or removed meanwhile
            log.warning("area %s: sweep for incomplete uploads failed: %s", name, exc)
            continue
        if result.removed:
            asyncio.run_coroutine_threadsafe(
                recorder.record(
                    EventType.STORAGE_SWEEP,
                    "success",
                    area=name,
                    count=result.removed,
                    reason="incomplete upload temp file(s) left by a crash removed",
                ),
                loop,
            )
            log.warning(
                "area %s: removed %d incomplete upload(s) left by a crash", name, result.removed
            )
        if result.unreadable or result.too_deep or result.stopped:
            log.warning(
                "area %s: sweep for incomplete uploads skipped %d unreadable and "
                "%d too deep folder(s)%s",
                name,
                result.unreadable,
                result.too_deep,
                f"; stopped: {result.stopped}" if result.stopped else "",
            )
