"""Failed connects to devices: one journal record each, a console line that
does not scroll everything else away.

A wrong pinned host key may be a man in the middle between the gateway and
a controller; a device that is down, a key file that went missing or
credentials the device now refuses are outages someone must fix. The relay
reports each failed connect (``storage/relay/failures.py``); this journals it
as ``device.connect`` ``failed`` with ``reason`` = the code (what SIEM rules
match on), ``error`` = the detail, ``address`` and ``severity`` (``alert``
for a host key mismatch: RFC 5424 severity 1, CEF 10; ``error`` otherwise),
and shows it on the console at once: a mismatch as an ERROR, the others as
WARNINGs, visible without ``-v``. A device that stays down while clients
keep trying would fill the console, so each (device, code) is shown at most
once per ``interval`` seconds, the next line saying how many were held back;
the journal keeps every one.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from conduit.audit.events import EventType
from conduit.errors import DeviceFailure

if TYPE_CHECKING:
    from conduit.gateway.app import Gateway

log = logging.getLogger("conduit.relay")

CONSOLE_INTERVAL = 60.0


class DeviceWatch:
    """The relay's ``on_failure`` for every device of one gateway."""

    def __init__(self, gateway: Gateway, interval: float = CONSOLE_INTERVAL) -> None:
        self.gateway = gateway
        self.interval = interval
        self._shown: dict[tuple[str, str], tuple[float, int]] = {}

    async def __call__(self, name: str, failure: DeviceFailure) -> None:
        device = self.gateway.config.devices.get(name)
        self._console(name, failure)
        await self.gateway.recorder.record(
            EventType.DEVICE_CONNECT,
            "failed",
            device=name,
            address=device.address if device else None,
            reason=failure.code,
            error=failure.detail,
            severity="alert" if failure.alert else "error",
        )

    def _console(self, name: str, failure: DeviceFailure) -> None:
        key = (name, failure.code)
        now = time.monotonic()
        last, held = self._shown.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._shown[key] = (last, held + 1)
            return
        self._shown[key] = (now, 0)
        more = f" ({held} more since the last such line)" if held else ""
        level = logging.ERROR if failure.alert else logging.WARNING
        # The console formatter escapes every line (serve.ConsoleFormatter).
        log.log(level, "%s [%s]: %s%s", failure.reason, failure.code, failure.detail, more)
