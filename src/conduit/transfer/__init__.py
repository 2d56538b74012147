"""The pipeline every file passes through: streaming hash, size limit, atomic commit."""

from conduit.errors import TransferRefused
from conduit.transfer.pipeline import (
    Direction,
    Download,
    Outcome,
    TransferRecord,
    Upload,
)

__all__ = ["Direction", "Download", "Outcome", "TransferRecord", "TransferRefused", "Upload"]
