"""The pipeline every file passes through: streaming hash, size limit, atomic commit."""

from conduit.transfer.pipeline import (
    Direction,
    Download,
    Outcome,
    TransferRecord,
    TransferRefused,
    Upload,
)

__all__ = ["Direction", "Download", "Outcome", "TransferRecord", "TransferRefused", "Upload"]
