"""Run-time changes to asyncssh, kept in one place (see ASYNCSSH-NOTES.md).

Every change here is tied to the pinned asyncssh version; tests/test_tuning.py
fails when an upgrade makes one of them stale.
"""

from __future__ import annotations

import asyncssh

PINNED = "2.24.1"


def apply() -> None:
    """Apply the run-time changes (idempotent)."""
    if asyncssh.__version__ != PINNED:
        raise RuntimeError(
            f"conduit.gateway.tuning is written for asyncssh {PINNED}, found {asyncssh.__version__}"
        )
