"""SIEM sinks (placeholder until delivery lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conduit.audit.auditor import Auditor


class Sink:
    def notify(self) -> None:
        pass

    async def stop(self, timeout: float) -> None:
        pass


def start_sinks(auditor: Auditor) -> list[Sink]:
    return []
