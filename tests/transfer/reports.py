"""What a transfer reported, kept for the test to read."""

from __future__ import annotations

from conduit.transfer import TransferRecord


class Reports:
    """A transfer's ``report`` callback that keeps every record, in order."""

    def __init__(self) -> None:
        self.records: list[TransferRecord] = []

    async def __call__(self, record: TransferRecord) -> None:
        self.records.append(record)
