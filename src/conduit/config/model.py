"""The shape of ``conduit.toml``: one pydantic model per section.

These models only say what a well-formed file looks like (types, units,
unknown keys). Cross-references (a role naming an unknown area, overlapping
zone networks, ...) are checked by :mod:`conduit.site.check`, which needs
the whole file at once. Paths stay as written here; :func:`conduit.config.load`
makes them absolute against the file's folder.
"""

from __future__ import annotations

import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from conduit.config.auth import AuthConfig
from conduit.config.crypto import CryptoConfig
from conduit.config.inspect import InspectConfig
from conduit.config.types import CheckedNetwork, Size
from conduit.config.types import Network as Network  # re-exported for check and policy


class Op(StrEnum):
    """An operation a grant can allow; every SFTP/SCP request maps to one."""

    LIST = "list"
    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    RENAME = "rename"
    MKDIR = "mkdir"
    #: release a quarantined file for this target (four eyes; never a client request)
    APPROVE = "approve"


class Obligation(StrEnum):
    """What a conduit requires to have happened before a transfer commits."""

    SIGNATURE = "signature"
    SCAN = "scan"
    APPROVAL = "approval"
    #: implied by a conduit's ``types`` (the true-type allow-list); writing it
    #: in ``require`` without ``types`` is a ``conduit check`` error
    TYPE = "type"


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Startups(NamedTuple):
    """OpenSSH's ``MaxStartups start:rate:full``: from ``start`` unauthenticated
    connections on, refuse new ones with probability ``rate`` %, rising
    linearly to 100 % at ``full``."""

    start: int
    rate: int
    full: int


def _startups(value: object) -> object:
    """``N`` (refuse beyond N, as sshd) or ``"start:rate:full"``."""
    if isinstance(value, bool):
        raise ValueError('must be a number or "start:rate:full"')
    if isinstance(value, int):
        if value < 1:
            raise ValueError("must be at least 1")
        return Startups(value, 100, value)
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
            raise ValueError('must be "start:rate:full", e.g. "10:30:100"')
        start, rate, full = (int(p) for p in parts)
        if not 1 <= start <= full or not 0 <= rate <= 100:
            raise ValueError("needs 1 <= start <= full and a rate of 0 to 100 (%)")
        return Startups(start, rate, full)
    return value


class Limits(Section):
    """Connection and session limits (the sshd_config knobs asyncssh lacks)."""

    login_grace_time: Annotated[float, Field(gt=0)] = 30.0
    max_auth_tries: Annotated[int, Field(ge=1)] = 6
    max_startups: Annotated[Startups, BeforeValidator(_startups)] = Startups(10, 30, 100)
    # unauthenticated connections at once from one address (IPv6: one /64)
    max_startups_per_source: Annotated[int, Field(ge=1)] = 10
    # repeated failed logins and refused connections: one record per source
    # at first, then one summary per source, user and method every interval
    auth_failure_summary_interval: Annotated[float, Field(gt=0)] = 60.0
    # below this much free space on the journal's disk, records about
    # unauthenticated clients are shed (and an alert raised) to keep room
    # for the records of transfers
    journal_min_free: Size = ByteSize(256 * 1024 * 1024)
    max_sessions_per_connection: Annotated[int, Field(ge=1)] = 10
    max_sessions_per_user: Annotated[int, Field(ge=1)] = 64
    idle_timeout: Annotated[float, Field(ge=0)] = 900.0
    # open SFTP handles (files and listings) per session and per user
    max_handles_per_session: Annotated[int, Field(ge=1)] = 64
    max_handles_per_user: Annotated[int, Field(ge=1)] = 256
    # upload bytes that arrived ahead of a gap, held until it fills
    max_reorder_per_session: ByteSize = ByteSize(16 * 1024 * 1024)
    max_reorder_total: ByteSize = ByteSize(128 * 1024 * 1024)
    # file descriptors kept free for the journal, SIEM sinks and accept()
    fd_reserve: Annotated[int, Field(ge=0)] = 64


class GatewayConfig(Section):
    listen: str = "127.0.0.1:2222"
    data_dir: Path = Path("data")
    host_keys: list[Path] = []
    # OpenSSH host certificates for those keys (ssh-keygen -h), read at start
    host_certificates: list[Path] = []
    node: str = Field(default_factory=socket.gethostname)
    timezone: str = "UTC"
    # fsync every upload and its folder before reporting success (survives a
    # power loss); false trades that for speed on many small files. Uploads
    # are atomic either way.
    durable_uploads: bool = True
    limits: Limits = Limits()
    crypto: CryptoConfig = CryptoConfig()  # SSH algorithms offered (see crypto.py)
    # processes serving connections: 1 (one process), N >= 2, or "auto" (one
    # per usable core); see docs/architecture.md "Worker processes"
    workers: int | Literal["auto"] = 1

    @field_validator("workers")
    @classmethod
    def _workers_positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 256:
            raise ValueError('must be 1 to 256, or "auto"')
        return value

    @property
    def worker_count(self) -> int:
        """How many worker processes serve connections (1: the gateway itself)."""
        if self.workers == "auto":
            import os

            return max(1, len(os.sched_getaffinity(0)))
        return int(self.workers)

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:2222")
        return value


class SiemSink(Section):
    target: str
    format: Literal["rfc5424", "cef"] = "rfc5424"
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    name: str | None = None

    @field_validator("target")
    @classmethod
    def _target_scheme(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in ("udp", "tcp", "tls") or ":" not in rest:
            raise ValueError("must be udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT")
        return value


class AuditConfig(Section):
    # When the file does not set it: ``<gateway.data_dir>/audit`` (Config fills it in).
    journal: Path = Path("data/audit")
    on_failure: Literal["closed", "alert"] = "closed"
    fsync: Literal["always", "batch", "never"] = "always"
    checkpoint_interval: Annotated[float, Field(gt=0)] = 60.0
    checkpoint_records: Annotated[int, Field(ge=1)] = 1000
    anchor_dirs: list[Path] = []
    rotate_size: Size = ByteSize(64 * 1024 * 1024)
    spool_alert_fill: Annotated[float, Field(gt=0, le=1)] = 0.8
    siem: list[SiemSink] = []


class ZoneConfig(Section):
    level: float
    networks: list[CheckedNetwork] = []
    description: str = ""


class AreaConfig(Section):
    zone: str
    path: Path
    description: str = ""


class DeviceConfig(Section):
    zone: str
    address: str
    user: str
    identity: Path | None = None
    password_file: Path | None = None
    password_env: str | None = None
    host_key: str | None = None
    known_hosts: Path | None = None
    trust_on_first_use: bool = False
    protocols: list[Literal["sftp", "scp"]] = ["sftp"]
    root: str = "/"
    commands: dict[str, str] = {}
    max_concurrency: Annotated[int, Field(ge=1)] = 4
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    crypto: CryptoConfig = CryptoConfig()  # algorithms for this device (legacy ones: widen)
    description: str = ""


class Grant(Section):
    target: str
    ops: list[Op]
    paths: list[str] = []


class RoleConfig(Section):
    grants: list[Grant] = []
    description: str = ""


class UserConfig(Section):
    keys: list[str] = []
    # a standard authorized_keys file read besides ``keys`` (same option syntax)
    authorized_keys: Path | None = None
    # certificate principals accepted for this user (none given: the user's name)
    principals: list[str] | None = None
    roles: list[str] = []
    networks: list[CheckedNetwork] = []
    description: str = ""


class ConduitConfig(Section):
    name: str
    from_zone: str = Field(alias="from")
    to_zone: str = Field(alias="to")
    paths: list[str] = []
    max_size: Size | None = None
    window: str | list[str] | None = None
    require: list[Obligation] = []
    trust: list[str] = []  # names of [inspect.trust.NAME] anchors for "signature"
    types: list[str] = []  # libmagic MIME types allowed (empty: any)
    # a download through it: "released" (only bytes committed from quarantine
    # having met `require`) or "scan" (scanned before the first byte goes out)
    on_read: Literal["released", "scan"] = "released"
    description: str = ""

    @model_validator(mode="after")
    def _on_read(self) -> ConduitConfig:
        other = set(self.require) - {Obligation.SCAN, Obligation.TYPE}
        if self.on_read == "scan" and (other or not self.obligations):
            raise ValueError(
                'on_read = "scan" checks scan and types while the file is read; '
                + (
                    f"{', '.join(sorted(other))} can only be met by released bytes: keep "
                    'on_read = "released"'
                    if other
                    else "this conduit requires neither"
                )
            )
        return self

    @property
    def obligations(self) -> frozenset[Obligation]:
        """``require``, plus ``type`` when ``types`` is set: a type allow-list
        is a check like the others, so the conduit's files go to quarantine."""
        return frozenset(self.require) | ({Obligation.TYPE} if self.types else frozenset())


class Config(Section):
    """A whole policy file. ``source`` is where it came from (None: embedded)."""

    gateway: GatewayConfig = GatewayConfig()
    audit: AuditConfig = AuditConfig()
    auth: AuthConfig = AuthConfig()
    inspect: InspectConfig = InspectConfig()
    zones: dict[str, ZoneConfig] = {}
    areas: dict[str, AreaConfig] = {}
    devices: dict[str, DeviceConfig] = {}
    roles: dict[str, RoleConfig] = {}
    users: dict[str, UserConfig] = {}
    conduits: list[ConduitConfig] = []
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _journal_follows_data_dir(cls, data: object) -> object:
        """No ``[audit] journal``: journal into ``data_dir/audit``, wherever data_dir is.

        A fixed default of ``data/audit`` sent a gateway with ``data_dir =
        "data2"`` to journal into ``data/audit``, beside another gateway's.
        """
        if not isinstance(data, dict):
            return data
        gateway, audit = data.get("gateway"), data.get("audit", {})
        if isinstance(gateway, GatewayConfig):
            data_dir: object = gateway.data_dir if "data_dir" in gateway.model_fields_set else None
        else:
            data_dir = gateway.get("data_dir") if isinstance(gateway, dict) else None
        if not isinstance(data_dir, str | Path) or not isinstance(audit, dict):
            return data  # the default, or a wrong type that validation will report
        if "journal" in audit:
            return data
        return {**data, "audit": {**audit, "journal": Path(data_dir) / "audit"}}

    @model_validator(mode="after")
    def _workers_serve_what_they_can(self) -> Config:
        """Worker processes do not yet carry the relay's device connections or
        the quarantine's keeper: refuse the combination rather than half-serve it."""
        if self.gateway.workers == 1:
            return self
        if self.devices:
            raise ValueError("gateway.workers: devices (relay) need workers = 1 for now")
        if any(c.obligations for c in self.conduits):
            raise ValueError(
                "gateway.workers: conduits with require/types (quarantine) need workers = 1 for now"
            )
        return self
