"""How the quarantine files an evidence upload (a signature or a manifest).

Which names are evidence is the checks' one rule,
:func:`conduit.inspect.plan.evidence_kind` / :func:`~conduit.inspect.plan.evidence_of`:
``X.sig`` / ``X.asc`` are signatures of ``X`` in the same folder;
``SHA256SUMS``, ``X.sha256`` *and their* ``.sig`` / ``.asc`` are manifest
evidence for every file of that folder (so a travelling signed manifest
reaches the signature check as ``evidence["manifest"]`` = the manifest and
its signature, paired by name). Names match exactly, case included.

Evidence through a conduit with obligations is not committed under its
name: it is kept in quarantine (at most ``max_evidence_size`` bytes),
journalled, and handed to the whole-file checks of the files it speaks for,
whether it arrived before or after them. This module adds what the
quarantine stores beside the name rule: the subject a signature speaks for,
and the kind by content where the name is ambiguous (``.sig``: OpenSSH or
OpenPGP).
"""

from __future__ import annotations

from conduit.inspect.plan import evidence_kind, evidence_of

SSH = "ssh"
OPENPGP = "openpgp"
MANIFEST = "manifest"
SSH_ARMOUR = b"-----BEGIN SSH SIGNATURE-----"

__all__ = ["MANIFEST", "OPENPGP", "SSH", "classify", "evidence_kind", "safe_name", "subject_of"]


def subject_of(name: str) -> str | None:
    """The base name a signature speaks for; None for a manifest (the folder's)."""
    subject = evidence_of(name)
    return None if subject is None else subject.rpartition("/")[2]


def classify(name: str, head: bytes) -> str:
    """The evidence kind a check consumes, from the name and the first bytes."""
    kind = evidence_kind(name)
    if kind is None:
        raise ValueError(f"{name!r} is not evidence")
    if kind == MANIFEST:
        return MANIFEST
    if name.endswith(".sig") and head.lstrip().startswith(SSH_ARMOUR):
        return SSH
    return OPENPGP


def safe_name(name: str) -> str:
    """``name`` as one path component inside its folder, or ValueError.

    Client names already passed :mod:`conduit.names`; this is the last guard
    where one becomes part of a quarantine path."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"not a plain file name: {name!r}")
    return name
