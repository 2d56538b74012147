"""Inspection's vocabulary: what a check says, and how the pipeline feeds it.

Two kinds of check, so a clean file is read once:

- a :class:`Stream` sees the bytes as they arrive, in order (the malware scan
  sends them to clamd while the upload is still coming; the type sniffer
  keeps the first bytes); :meth:`Stream.finish` gives its verdict when the
  last byte is in;
- a :class:`WholeFileCheck` looks at the quarantined file once it is whole
  and hashed, together with its evidence (a detached signature or a vendor
  manifest that travelled beside it).

A verdict is ``passed``, ``failed`` or ``pending`` (the evidence has not
arrived yet: the file waits in quarantine for its grace time). ``reason`` is
short and safe to show the client; ``detail`` is for the journal, like
:class:`conduit.errors.ConduitError`'s two texts.

Checks never block the event loop: blocking work (a ``gpg`` or
``ssh-keygen`` process, libmagic) runs in a subprocess or a thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol


class State(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's answer about one file."""

    check: str  # "signature", "scan", "type"
    state: State
    reason: str  # short, client-safe: "signature: key not trusted"
    detail: str = ""  # the journal's fuller text
    duration: float = 0.0  # seconds this check took (journalled per check)

    @property
    def passed(self) -> bool:
        return self.state is State.PASSED


@dataclass(frozen=True, slots=True)
class Subject:
    """A whole file waiting in quarantine, as a whole-file check sees it."""

    path: Path  # the quarantined bytes (read-only to checks)
    name: str  # the name the client gave it, e.g. "/firmware/rtu-4.2.bin"
    sha256: str
    size: int
    #: evidence that travelled with it, by kind (see plan.evidence_kind):
    #: "signature" (NAME.sig / NAME.asc; OpenSSH or OpenPGP is told by
    #: content; "ssh" and "openpgp" are accepted too), "manifest"
    #: (SHA256SUMS, NAME.sha256 and their .sig / .asc, same folder); absent
    #: kinds are simply missing
    evidence: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)


class Stream(Protocol):
    """A check fed the upload's bytes in order while they arrive."""

    check: str

    async def feed(self, chunk: bytes) -> None: ...

    async def finish(self) -> Verdict: ...

    async def abort(self) -> None:
        """The upload failed: release what the check holds (a clamd connection)."""


class WholeFileCheck(Protocol):
    """A check of a whole, hashed file and its evidence."""

    check: str

    async def verify(self, subject: Subject) -> Verdict: ...
