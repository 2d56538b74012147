"""What one piece of evidence says about a file, and the reasons it can give.

Each signature method (:mod:`.sshsig`, :mod:`.openpgp`, a manifest) answers
with an :class:`Outcome`; :mod:`.signature` combines them into the
``signature`` check's verdict. Every way to fail has its own short reason,
safe to show the client; the journal gets the ``detail``.
"""

from __future__ import annotations

from dataclasses import dataclass

GOOD = "signature: good"
PENDING = "signature: waiting for a signature or manifest"
MALFORMED = "signature: malformed evidence"
TOO_LARGE = "signature: evidence too large"
WRONG_NAMESPACE = "signature: wrong namespace"
UNTRUSTED = "signature: key not trusted"
EXPIRED = "signature: key expired"
REVOKED = "signature: key revoked"
SIG_EXPIRED = "signature: signature expired"
MISMATCH = "signature: does not match the file"
NOT_LISTED = "signature: file not in manifest"
HASH_MISMATCH = "signature: manifest hash differs from the file"
UNSIGNED_MANIFEST = "signature: manifest not signed by a trusted key"
UNAVAILABLE = "signature: verifier unavailable"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One piece of evidence, judged: good or not, and why."""

    ok: bool
    reason: str
    detail: str
    signer: str = ""  # who vouched (principal, OpenPGP fingerprint, manifest)


def bad(reason: str, detail: str) -> Outcome:
    return Outcome(False, reason, detail)
