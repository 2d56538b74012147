"""Conduit's error vocabulary: what a client is told, what the audit records.

Every refusal the gateway serves carries two texts. ``reason`` is short and
safe to show the client: it becomes the SFTP status message or the SCP error
line, and never names a real path, a key file or a library's exception text.
``detail`` says more for the audit journal (still no real path outside an
area). A :class:`Fault` says which SFTP status (and SCP refusal) fits::

    Exception
     +-- ConduitError              reason (client) / detail (audit)
     |    +-- StorageError         + fault: Fault -> SFTP status, SCP error line
     |    |    +-- Concealed           there but not shown: refused as missing
     |    |    +-- Denied              the policy said no (hidden -> as missing)
     |    |    +-- TransferRefused     the pipeline refused mid-stream (size,
     |    |    |                       order)
     |    |    +-- DeviceFailure       the relay could not reach a device
     |    |    |                       (+ code, alert, sftp_status)
     |    |    +-- JournalUnavailable  an operation's record was refused: the
     |    |                            operation is refused too (fail closed)
     |    +-- AuditUnavailable     the journal cannot take an event (closed
     |                             mode); the gateway turns it into
     |                             JournalUnavailable for the client
     +-- ConfigError (config.load), PolicyError (policy.compile),
         CommandError (cli.main)   an operator's mistake, printed whole to the
                                   operator: no client, no reason/detail split

Which is raised where: storage backends raise :class:`StorageError` and
:class:`Concealed`; the relay :class:`DeviceFailure`; the gateway's guard
:class:`Denied`; the transfer pipeline :class:`TransferRefused`; the auditor
:class:`AuditUnavailable`; the gateway's operations :class:`JournalUnavailable`.

This module is vocabulary: it imports nothing of Conduit, so every layer may
raise and catch these.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

#: SFTP status codes a :class:`DeviceFailure` may carry (RFC draft 02 numbers).
FX_PERMISSION_DENIED = 3
FX_NO_CONNECTION = 6
FX_CONNECTION_LOST = 7


class ConduitError(Exception):
    """A refusal with a client's text (``reason``) and the audit's (``detail``)."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        self.detail = detail or reason
        super().__init__(reason)


class Fault(Enum):
    """Why a storage operation failed; the gateway maps each to an SFTP status."""

    NOT_FOUND = "no such file or directory"
    FORBIDDEN = "permission denied"
    EXISTS = "already exists"
    NOT_A_DIRECTORY = "not a directory"
    IS_A_DIRECTORY = "is a directory"
    NOT_EMPTY = "directory not empty"
    UNSUPPORTED = "operation not supported"
    NO_SPACE = "no space left"
    UNAVAILABLE = "storage unavailable"
    FAILURE = "operation failed"


class StorageError(ConduitError):
    """A refused or failed operation on the files a client sees.

    ``reason`` defaults to the fault's own text; ``detail`` to the reason.
    """

    def __init__(self, fault: Fault, reason: str | None = None, detail: str | None = None):
        self.fault = fault
        super().__init__(reason or fault.value, detail)


class Concealed(StorageError):
    """Something is there that the area does not show (a link leaving it, a
    loop, a FIFO): refused exactly as a missing name, the truth in ``detail``."""

    def __init__(self, detail: str) -> None:
        super().__init__(Fault.NOT_FOUND, None, detail)


class Verdict(Protocol):
    """What :class:`Denied` needs of a policy decision."""

    @property
    def hidden(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def detail(self) -> str: ...


class Denied(StorageError):
    """The policy said no. ``reason`` goes to the client, ``detail`` to the audit.

    What the user may not see is refused as a missing name (status and text),
    so a hidden area and a name that does not exist cannot be told apart.
    """

    def __init__(self, decision: Verdict) -> None:
        fault = Fault.NOT_FOUND if decision.hidden else Fault.FORBIDDEN
        super().__init__(fault, decision.reason, decision.detail)
        self.decision = decision


class TransferRefused(StorageError):
    """The transfer pipeline itself refused (size limit, non-sequential write)."""


class DeviceFailure(StorageError):
    """The relay could not connect to a device (see
    :mod:`conduit.storage.relay.failures`): ``code`` names why, ``alert`` says
    it may be an attack rather than an outage, ``sftp_status`` is the SFTP
    status that tells a client best what happened."""

    def __init__(
        self,
        code: str,
        reason: str,
        detail: str,
        *,
        sftp_status: int = FX_NO_CONNECTION,
        alert: bool = False,
    ) -> None:
        super().__init__(Fault.UNAVAILABLE, reason, detail)
        self.code = code
        self.sftp_status = sftp_status
        self.alert = alert


class JournalUnavailable(StorageError):
    """The audit journal refused an operation's record, so the operation is
    refused (fail closed); ``detail`` says which record and why."""

    REASON = "audit journal unavailable: operation refused"

    def __init__(self, detail: str) -> None:
        super().__init__(Fault.UNAVAILABLE, self.REASON, detail)


class AuditUnavailable(ConduitError):
    """The journal cannot be written and on_failure is "closed": refuse the action."""


class ListenError(Exception):
    """The gateway could not start listening: the address is in use or not
    permitted, or no host key can sign with the algorithms configured."""
