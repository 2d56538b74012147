"""``[inspect]``: the trust anchors and scanner a conduit's ``require`` uses.

A conduit names its anchors with ``trust = ["vendor"]``; each
``[inspect.trust.NAME]`` lists OpenSSH allowed-signers, OpenPGP public keys
(imported into the gateway's own keyring, never a user's) and vendor SHA-256
lists. ``[inspect.scan]`` says where clamd listens and what a scanner failure
means (``closed``: the file is refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator

from conduit.config.types import Duration, Size


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TrustConfig(_Section):
    ssh_allowed_signers: Path | None = None  # ssh-keygen -Y verify's format
    ssh_namespace: str = "file"
    openpgp_keys: list[Path] = []
    sha256_lists: list[Path] = []


class ScanConfig(_Section):
    clamd: str | None = None  # "unix:PATH" or "tcp://HOST:PORT"
    on_failure: Literal["closed"] = "closed"
    timeout: Annotated[float, Field(gt=0)] = 60.0  # per step: connect, each chunk, the verdict
    # on_read = "scan": a clean download's verdict is reused for the same
    # SHA-256 and checks this long (0: scan every download)
    verdict_cache: Duration = 86400.0

    @field_validator("clamd")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith("unix:") and len(value) > len("unix:"):
            return value
        host, sep, port = value.removeprefix("tcp://").rpartition(":")
        if value.startswith("tcp://") and sep and host and port.isdigit() and 0 < int(port) < 65536:
            return value
        raise ValueError("must be unix:PATH or tcp://HOST:PORT")


class InspectConfig(_Section):
    trust: dict[str, TrustConfig] = {}
    scan: ScanConfig = ScanConfig()
    # a file waiting for its signature or manifest is rejected after this long
    signature_grace: Duration = 600.0
    # an approval not given within this time expires (the item is rejected)
    approval_expiry: Duration = 7 * 86400.0
    # signature files and manifests are evidence, not payload: kept small
    max_evidence_size: Size = ByteSize(1024 * 1024)
    # one ssh-keygen or gpg run (a hung tool fails the check closed)
    verify_timeout: Annotated[float, Field(gt=0)] = 30.0
