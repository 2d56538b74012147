"""The ``signature`` obligation: some trust anchor of the conduit vouches for the file.

A file passes when any method of any trust set the conduit names vouches for
its SHA-256:

- a detached signature that travelled beside it (``NAME.sig``, ``NAME.asc``):
  an OpenSSH signature (told apart by its armour) checked against the trust
  set's allowed signers and namespace, otherwise an OpenPGP signature checked
  against the trust set's own keyring;
- a vendor list from the trust set's ``sha256_lists`` naming the file with its
  hash;
- a manifest that travelled beside it, *if* that manifest itself carries a
  valid signature (``SHA256SUMS.sig``/``.asc``) by the trust set: an
  unsigned manifest proves nothing, anyone can write one.

No evidence yet (and no vendor list naming the file): ``pending``; the
quarantine waits for the grace time. Evidence that does not vouch: ``failed``
with the most telling reason of all the evidence (a tampered file before an
unknown key, an unknown key before a malformed file); the journal gets every
piece's detail. Evidence over ``max_evidence_size`` is refused unread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from conduit.config.inspect import TrustConfig
from conduit.inspect import sshsig
from conduit.inspect.base import State, Subject, Verdict
from conduit.inspect.manifest import Manifest, ManifestError
from conduit.inspect.openpgp import Keyring
from conduit.inspect.outcome import (
    EXPIRED,
    GOOD,
    HASH_MISMATCH,
    MALFORMED,
    MISMATCH,
    NOT_LISTED,
    PENDING,
    REVOKED,
    SIG_EXPIRED,
    TOO_LARGE,
    UNAVAILABLE,
    UNSIGNED_MANIFEST,
    UNTRUSTED,
    WRONG_NAMESPACE,
    Outcome,
    bad,
)

CHECK = "signature"
SIGNATURE_KINDS = ("signature", "ssh", "openpgp")
MAX_LIST = 64 * 1024 * 1024  # an operator's vendor list: larger is a mistake
#: the most telling first: a tampered file says more than an unknown key
PRIORITY = (
    MISMATCH,
    HASH_MISMATCH,
    REVOKED,
    EXPIRED,
    SIG_EXPIRED,
    WRONG_NAMESPACE,
    NOT_LISTED,
    UNTRUSTED,
    UNSIGNED_MANIFEST,
    TOO_LARGE,
    MALFORMED,
    UNAVAILABLE,
)


@dataclass(frozen=True)
class Anchors:
    """One ``[inspect.trust.NAME]``, ready to verify with."""

    name: str
    config: TrustConfig
    keyring: Keyring | None  # None: the set has no openpgp_keys


def _read(path: Path, limit: int) -> tuple[bytes | None, Outcome | None]:
    try:
        size = path.stat().st_size
        if size > limit:
            return None, bad(TOO_LARGE, f"{path.name}: {size} bytes, more than {limit}")
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        return None, bad(MALFORMED, f"{path.name}: cannot read ({exc.strerror or exc})")
    if len(data) > limit:
        return None, bad(TOO_LARGE, f"{path.name}: more than {limit} bytes")
    return data, None


class SignatureCheck:
    """Whole-file check: does any of the conduit's trust anchors vouch for it?"""

    check = CHECK

    def __init__(self, anchors: Sequence[Anchors], max_evidence: int, timeout: float) -> None:
        self._anchors = tuple(anchors)
        self._max = max_evidence
        self._timeout = timeout

    async def verify(self, subject: Subject) -> Verdict:
        started = time.monotonic()
        verdict = await self._verify(subject)
        spent = time.monotonic() - started
        return Verdict(verdict.check, verdict.state, verdict.reason, verdict.detail, spent)

    async def _verify(self, subject: Subject) -> Verdict:
        outcomes: list[Outcome] = []
        notes: list[Outcome] = []  # vendor lists that do not name the file: not a failure
        for outcome in self._vendor_lists(subject):
            if outcome.ok:
                return Verdict(CHECK, State.PASSED, GOOD, outcome.detail)
            (outcomes if outcome.reason != NOT_LISTED else notes).append(outcome)
        evidence: Mapping[str, tuple[Path, ...]] = subject.evidence
        signatures = [p for kind in SIGNATURE_KINDS for p in evidence.get(kind, ())]
        for path in signatures:
            outcome = await self._signature(subject.path, path)
            if outcome.ok:
                return Verdict(CHECK, State.PASSED, GOOD, outcome.detail)
            outcomes.append(outcome)
        manifests = evidence.get("manifest", ())
        by_name = {p.name: p for p in manifests}
        for path in manifests:
            if path.name.endswith((".sig", ".asc")):
                continue
            if not ({f"{path.name}.sig", f"{path.name}.asc"} & by_name.keys()):
                # its signature may still be on its way (evidence arrives in
                # any order); an unsigned manifest in the folder must not
                # fail every file beside it: wait, and expire after the grace
                notes.append(bad(UNSIGNED_MANIFEST, f"{path.name} has no .sig or .asc beside it"))
                continue
            outcome = await self._manifest(subject, path, by_name)
            if outcome.ok:
                return Verdict(CHECK, State.PASSED, GOOD, outcome.detail)
            outcomes.append(outcome)
        lines = [o.detail for o in [*outcomes, *notes]]
        if not outcomes:
            if manifests and all(p.name.endswith((".sig", ".asc")) for p in manifests):
                lines.append("a manifest signature arrived without its manifest")
            return Verdict(CHECK, State.PENDING, PENDING, "; ".join(lines) or "no evidence yet")
        worst = min(
            outcomes, key=lambda o: PRIORITY.index(o.reason) if o.reason in PRIORITY else 99
        )
        return Verdict(CHECK, State.FAILED, worst.reason, "; ".join(lines))

    def _vendor_lists(self, subject: Subject) -> list[Outcome]:
        found: list[Outcome] = []
        for anchors in self._anchors:
            for path in anchors.config.sha256_lists:
                data, problem = _read(path, MAX_LIST)
                if problem is not None or data is None:
                    found.append(problem or bad(MALFORMED, f"{path}: unreadable"))
                    continue
                found.append(_lookup(data, str(path), subject, anchors.name))
        return found

    async def _signature(self, file: Path, signature: Path) -> Outcome:
        """One detached signature over ``file``, tried with every trust set."""
        data, problem = _read(signature, self._max)
        if problem is not None or data is None:
            return problem or bad(MALFORMED, f"{signature.name}: unreadable")
        outcomes: list[Outcome] = []
        ssh = sshsig.is_ssh_signature(data)
        for anchors in self._anchors:
            if ssh:
                if anchors.config.ssh_allowed_signers is None:
                    continue
                outcome = await sshsig.verify(
                    file,
                    signature,
                    data,
                    allowed_signers=anchors.config.ssh_allowed_signers,
                    namespace=anchors.config.ssh_namespace,
                    timeout=self._timeout,
                    trust=anchors.name,
                )
            elif anchors.keyring is not None:
                outcome = await anchors.keyring.verify(file, signature)
            else:
                continue
            if outcome.ok:
                return outcome
            outcomes.append(outcome)
        if not outcomes:
            method = "OpenSSH signatures" if ssh else "OpenPGP keys"
            return bad(UNTRUSTED, f"{signature.name}: no trust set of this conduit has {method}")
        return min(outcomes, key=lambda o: PRIORITY.index(o.reason) if o.reason in PRIORITY else 99)

    async def _manifest(self, subject: Subject, path: Path, by_name: Mapping[str, Path]) -> Outcome:
        """A travelling manifest: vouches only when signed by the trust set."""
        signature = by_name.get(f"{path.name}.sig") or by_name.get(f"{path.name}.asc")
        if signature is None:
            return bad(UNSIGNED_MANIFEST, f"{path.name} has no {path.name}.sig or .asc beside it")
        signed = await self._signature(path, signature)
        if not signed.ok:
            reason = UNSIGNED_MANIFEST if signed.reason in (UNTRUSTED, MISMATCH) else signed.reason
            return bad(reason, f"{path.name}: {signed.detail}")
        data, problem = _read(path, self._max)
        if problem is not None or data is None:
            return problem or bad(MALFORMED, f"{path.name}: unreadable")
        outcome = _lookup(data, path.name, subject, "")
        if outcome.ok:
            return Outcome(True, GOOD, f"{outcome.detail}, signed: {signed.detail}", signed.signer)
        return outcome


def _lookup(data: bytes, source: str, subject: Subject, trust: str) -> Outcome:
    try:
        manifest = Manifest.parse(data, source)
    except ManifestError as exc:
        return bad(MALFORMED, str(exc))
    found = manifest.lookup(subject.name, subject.sha256)
    where = f" (trust {trust!r})" if trust else ""
    if found.matches:
        return Outcome(True, GOOD, found.note + where, source)
    return bad(HASH_MISMATCH if found.listed else NOT_LISTED, found.note + where)
