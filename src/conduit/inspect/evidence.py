"""Which uploads are evidence (a signature or a vendor manifest) rather than payload.

``X.sig`` and ``X.asc`` are evidence of ``X`` in the same folder; ``SHA256SUMS``
and ``*.sha256`` are manifests for every file of their folder. Evidence
through a conduit with obligations is not committed under its name: it is
kept in quarantine (at most ``max_evidence_size`` bytes), journalled, and
handed to the whole-file checks of the files it speaks for, whether it
arrived before or after them.

The naming rule is the checks' too (``conduit.inspect.plan.evidence_kind``
when the checks package is present); this is the minimal form the
quarantine needs: the kind by name, refined by content where the name is
ambiguous (``.sig``: OpenSSH or OpenPGP).
"""

from __future__ import annotations

SSH = "ssh"
OPENPGP = "openpgp"
MANIFEST = "manifest"
MANIFEST_NAMES = frozenset({"SHA256SUMS", "sha256sums", "SHA256SUMS.txt"})
SSH_ARMOUR = b"-----BEGIN SSH SIGNATURE-----"


def evidence_kind(name: str) -> tuple[str, str | None] | None:
    """``(kind, subject)`` if ``name`` is evidence: ``("signature", "X")`` for
    ``X.sig``/``X.asc``, ``("manifest", None)`` for a manifest; None for payload."""
    if name in MANIFEST_NAMES or (name.endswith(".sha256") and len(name) > len(".sha256")):
        return (MANIFEST, None)
    for suffix in (".sig", ".asc"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return ("signature", name[: -len(suffix)])
    return None


def classify(name: str, head: bytes) -> str:
    """The evidence kind a check consumes, from the name and the first bytes."""
    kind = evidence_kind(name)
    if kind is None:
        raise ValueError(f"{name!r} is not evidence")
    if kind[0] == MANIFEST:
        return MANIFEST
    if name.endswith(".sig") and head.lstrip().startswith(SSH_ARMOUR):
        return SSH
    return OPENPGP
