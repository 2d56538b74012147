"""Test-only checks: they exercise the quarantine's machinery, not real scanners.

``Forbidden`` is a :class:`~conduit.inspect.base.Stream` that fails a file
starting with ``EVIL``; ``Countersigned`` is a whole-file check that waits
(pending) for ``NAME.sig`` evidence and passes when that evidence names the
file's SHA-256 (a stand-in for a real signature, which the checks package
verifies with ssh-keygen and gpg).
"""

from __future__ import annotations

from conduit.config.model import Obligation
from conduit.inspect.base import State, Stream, Subject, Verdict, WholeFileCheck


class Forbidden:
    check = "magic"

    def __init__(self) -> None:
        self.head = b""
        self.aborted = False

    async def feed(self, chunk: bytes) -> None:
        if len(self.head) < 4:
            self.head += chunk[: 4 - len(self.head)]

    async def finish(self) -> Verdict:
        if self.head.startswith(b"EVIL"):
            return Verdict("magic", State.FAILED, "magic: forbidden content", "starts with EVIL")
        return Verdict("magic", State.PASSED, "magic: ok")

    async def abort(self) -> None:
        self.aborted = True


class Countersigned:
    check = "signature"

    async def verify(self, subject: Subject) -> Verdict:
        signatures = [*subject.evidence.get("openpgp", ()), *subject.evidence.get("ssh", ())]
        if not signatures:
            return Verdict("signature", State.PENDING, "signature: waiting for NAME.sig")
        if any(subject.sha256 in p.read_text(errors="replace") for p in signatures):
            return Verdict("signature", State.PASSED, "signature: ok")
        return Verdict(
            "signature",
            State.FAILED,
            "signature: does not match",
            f"no evidence names {subject.sha256}",
        )


class ChecksForTests:
    """Streams for conduit ``scanned``, whole-file checks for ``signed``."""

    enforceable = frozenset(Obligation)

    def streams(self, conduit: str) -> list[Stream]:
        return [Forbidden()] if conduit == "scanned" else []

    def whole_file(self, conduit: str) -> list[WholeFileCheck]:
        return [Countersigned()] if conduit == "signed" else []
