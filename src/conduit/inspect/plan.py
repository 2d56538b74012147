"""Which checks a conduit's files go through, built once per policy.

The gateway builds one :class:`Inspector` from the policy at start and at
every reload, and asks it for a conduit's :class:`Plan`. A plan hands out
fresh stream checks per upload (:meth:`Plan.streams`: the malware scan when
``scan`` is required, the true-type check when ``types`` is set), the
whole-file checks (:meth:`Plan.whole_file`: the signature check when
``signature`` is required) and the obligations themselves (``approval`` is
the quarantine's to enforce).

:func:`evidence_kind` is the one naming rule for evidence, so the quarantine
knows an upload is a signature or a manifest *of* some file rather than a
file of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from conduit.config.model import ConduitConfig, Config, Obligation
from conduit.inspect.base import Stream, WholeFileCheck
from conduit.inspect.clamd import Address, ClamdStream, Unconfigured, parse_address
from conduit.inspect.filetype import TypeStream
from conduit.inspect.openpgp import Keyring
from conduit.inspect.signature import Anchors, SignatureCheck

#: What the gateway enforces with these checks and the quarantine: every obligation.
ENFORCEABLE = frozenset(Obligation)

SIGNATURE_SUFFIXES = (".sig", ".asc")
MANIFEST_NAMES = frozenset({"SHA256SUMS"})
MANIFEST_SUFFIX = ".sha256"


def _is_manifest(base: str) -> bool:
    return base in MANIFEST_NAMES or (base.endswith(MANIFEST_SUFFIX) and base != MANIFEST_SUFFIX)


def evidence_kind(name: str) -> str | None:
    """``"signature"``, ``"manifest"`` or None (a file of its own), by name.

    ``X.sig`` / ``X.asc``: a detached signature of ``X`` in the same folder
    (OpenSSH or OpenPGP: the check tells them apart by content).
    ``SHA256SUMS``, ``X.sha256`` and their ``.sig`` / ``.asc``: a manifest
    (and its signature) for the files of that folder. Names match exactly,
    case included: ``x.SIG`` is a file like any other.
    """
    base = name.rpartition("/")[2]
    if _is_manifest(base):
        return "manifest"
    for suffix in SIGNATURE_SUFFIXES:
        stem = base.removesuffix(suffix)
        if stem != base and stem:
            return "manifest" if _is_manifest(stem) else "signature"
    return None


def evidence_of(name: str) -> str | None:
    """The file a signature named ``name`` vouches for (same folder), or None."""
    if evidence_kind(name) != "signature":
        return None
    return name[:-4]


@dataclass(frozen=True)
class Plan:
    """What one conduit requires of its files."""

    conduit: str
    obligations: frozenset[Obligation]
    types: tuple[str, ...] = ()
    scan: Address | None = None
    scan_timeout: float = 60.0
    signature: SignatureCheck | None = None
    trust: tuple[str, ...] = ()
    on_read: str = "released"  # a download: "released" bytes only, or "scan" them

    @property
    def inspects(self) -> bool:
        """Files through this conduit go to quarantine (some check or approval applies)."""
        return bool(self.obligations or self.types)

    def streams(self) -> list[Stream]:
        """New stream checks for one upload, fed its bytes in order."""
        found: list[Stream] = []
        if Obligation.SCAN in self.obligations:
            found.append(ClamdStream(self.scan, self.scan_timeout) if self.scan else Unconfigured())
        if self.types:
            found.append(TypeStream(self.types))
        return found

    def whole_file(self) -> list[WholeFileCheck]:
        return [self.signature] if self.signature is not None else []

    def describe(self) -> list[str]:
        """One line per check that would run, for ``conduit explain``."""
        lines: list[str] = []
        if Obligation.SCAN in self.obligations:
            where = f"clamd at {self.scan}" if self.scan else "no scanner configured: refused"
            lines.append(f"scan: malware scan while the upload arrives ({where})")
        if self.types:
            lines.append(f"type: libmagic type must be one of {', '.join(self.types)}")
        if Obligation.SIGNATURE in self.obligations:
            lines.append(
                "signature: a detached signature, vendor list or signed manifest from trust "
                + (", ".join(self.trust) or "(none: refused)")
            )
        if Obligation.APPROVAL in self.obligations:
            lines.append("approval: a second person approves the file's SHA-256")
        if self.on_read == "scan":
            lines.append(
                "on read: these checks run before a download's first byte goes out "
                "(a clean verdict is reused for the same SHA-256)"
            )
        return lines


@dataclass
class Inspector:
    """The checks of one policy; build anew at every reload."""

    config: Config
    data_dir: Path | None = None
    _keyrings: dict[str, Keyring] = field(default_factory=dict, init=False)
    _plans: dict[str, Plan] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        inspect = self.config.inspect
        root = (self.data_dir or self.config.gateway.data_dir) / "inspect" / "gnupg"
        for name, trust in inspect.trust.items():
            if trust.openpgp_keys:
                self._keyrings[name] = Keyring(
                    root, name, trust.openpgp_keys, inspect.verify_timeout
                )
        for conduit in self.config.conduits:
            self._plans[conduit.name] = self._plan(conduit)

    @property
    def keyrings(self) -> Mapping[str, Keyring]:
        return self._keyrings

    def _plan(self, conduit: ConduitConfig) -> Plan:
        inspect = self.config.inspect
        obligations = conduit.obligations
        signature = None
        if Obligation.SIGNATURE in obligations:
            anchors = [
                Anchors(name, inspect.trust[name], self._keyrings.get(name))
                for name in conduit.trust
                if name in inspect.trust
            ]
            signature = SignatureCheck(
                anchors, int(inspect.max_evidence_size), inspect.verify_timeout
            )
        scan = parse_address(inspect.scan.clamd) if inspect.scan.clamd else None
        return Plan(
            conduit.name,
            obligations,
            tuple(conduit.types),
            scan,
            inspect.scan.timeout,
            signature,
            tuple(conduit.trust),
            conduit.on_read,
        )

    def for_conduit(self, name: str) -> Plan:
        """The plan of conduit ``name`` (KeyError: no such conduit)."""
        return self._plans[name]

    # The quarantine's view (conduit.inspect.quarantine.Checks): what is
    # enforced, and the checks of one conduit's next upload.
    enforceable = ENFORCEABLE

    def streams(self, conduit: str) -> list[Stream]:
        return self._plans[conduit].streams()

    def whole_file(self, conduit: str) -> list[WholeFileCheck]:
        return self._plans[conduit].whole_file()

    def on_read(self, conduit: str) -> str:
        """``released`` or ``scan``: how a download through ``conduit`` is cleared."""
        return self._plans[conduit].on_read
