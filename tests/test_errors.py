"""The error vocabulary: every refusal a client can see carries a short reason
for it and a fuller detail for the audit, and a journal outage is refused."""

from __future__ import annotations

import pytest

from conduit.errors import (
    AuditUnavailable,
    Concealed,
    ConduitError,
    Denied,
    DeviceFailure,
    Fault,
    JournalUnavailable,
    StorageError,
    TransferRefused,
)
from conduit.policy import Decision
from conduit.policy.decision import ABSENT


def test_a_hidden_denial_reads_exactly_as_a_missing_name() -> None:
    hidden = Denied(Decision(False, "r", ABSENT, "area secret is hidden", hidden=True))
    missing = StorageError(Fault.NOT_FOUND)
    assert (hidden.fault, hidden.reason) == (missing.fault, ABSENT)
    assert hidden.detail == "area secret is hidden"  # the truth goes to the audit only
    shown = Denied(Decision(False, "r", "outside the window", "window closed at 18:00"))
    assert (shown.fault, str(shown)) == (Fault.FORBIDDEN, "outside the window")


def test_concealed_tells_the_client_nothing_more_than_missing() -> None:
    exc = Concealed("a link leaving the area: /etc/passwd")
    assert exc.fault is Fault.NOT_FOUND
    assert exc.reason == Fault.NOT_FOUND.value and "/etc" not in str(exc)
    assert "/etc/passwd" in exc.detail


def test_journal_unavailable_refuses_with_a_fixed_reason() -> None:
    exc = JournalUnavailable("audit record file.upload/intent failed: disk full")
    assert exc.fault is Fault.UNAVAILABLE
    assert exc.reason == "audit journal unavailable: operation refused"
    assert "disk full" in exc.detail and "disk full" not in str(exc)


@pytest.mark.parametrize(
    "exc",
    [
        StorageError(Fault.FAILURE, "no", "why"),
        TransferRefused(Fault.FAILURE, "size limit", "size limit 10 exceeded"),
        DeviceFailure("timeout", "device did not answer in time", "device plc1: timeout"),
        JournalUnavailable("why"),
        Concealed("why"),
    ],
)
def test_every_refusal_a_client_sees_has_a_fault(exc: StorageError) -> None:
    assert isinstance(exc, ConduitError) and isinstance(exc.fault, Fault)
    assert exc.reason and exc.detail and str(exc) == exc.reason


def test_the_auditor_refusal_is_not_a_storage_error() -> None:
    """Operations wraps anything but a StorageError into JournalUnavailable: the
    auditor's own refusal must be wrapped (fail closed), not passed through."""
    exc = AuditUnavailable("the audit journal is closed")
    assert isinstance(exc, ConduitError) and not isinstance(exc, StorageError)
    assert exc.detail == exc.reason == "the audit journal is closed"
