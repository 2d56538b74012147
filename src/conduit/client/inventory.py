"""The fleet's inventory: devices, groups and how to reach each, in one TOML file.

::

    [defaults]
    user = "ops"
    identity = "keys/fleet"              # relative to the inventory file
    [devices.rtu-01]
    address = "10.20.1.11:22"
    host_key = "ssh-ed25519 AAAA..."     # or known_hosts = "..."
    groups = ["substation-a"]
    protocol = "sftp"                    # or "scp" for devices without an SFTP server
    [groups.substations]
    children = ["substation-a"]

A device's settings are its own, else ``[defaults]``; ``vars`` merge
(defaults, then its groups, then its own). Every table refuses unknown keys
(a misspelt ``host_kye`` must not silently drop a pin), and every fault is
reported with the file, the line and the key, as ``conduit check`` does for
the policy. A target is a device name, a group name (its devices and its
children's), or ``all``.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncssh
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from conduit.client.client import check_rename
from conduit.client.endpoint import DEFAULT_CONNECT_TIMEOUT, Endpoint, split_host_port
from conduit.client.errors import ClientError
from conduit.config.crypto import CryptoConfig
from conduit.config.load import key_of, locate
from conduit.names import name_problem

Scalar = str | int | float | bool
VarValue = Scalar | list[Any] | dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    """``[defaults]``: what every device has unless it says otherwise."""

    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    jump: str | None = None
    known_hosts: Path | None = None
    protocol: Literal["auto", "sftp", "scp"] = "auto"
    remote_hash: Literal["readback", "sha256sum"] = "readback"
    commands: list[str] = []
    scp_rename: str | None = None
    crypto: CryptoConfig | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    vars: dict[str, VarValue] = {}


class DeviceEntry(_Strict):
    """``[devices.NAME]``."""

    address: str
    port: int | None = None
    user: str | None = None
    identity: Path | None = None
    jump: str | None = None
    host_key: str | None = None
    known_hosts: Path | None = None
    groups: list[str] = []
    protocol: Literal["auto", "sftp", "scp"] | None = None
    remote_hash: Literal["readback", "sha256sum"] | None = None
    """``sha256sum``: the device may run ``sha256sum -- PATH`` (verify without a read-back)."""
    commands: list[str] | None = None
    """The exact commands a job may run on it (pre/post checks); none by default."""
    scp_rename: str | None = None
    """Legacy SCP: the device's rename command (``mv -f -T -- {old} {new}``), so uploads
    land under a temp name first; without one they are written in place."""
    crypto: CryptoConfig | None = None
    """Algorithm lists for an old device, as the gateway's ``[devices.NAME.crypto]``."""
    connect_timeout: float | None = None
    vars: dict[str, VarValue] = {}

    @field_validator("host_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                asyncssh.import_public_key(value)
            except (asyncssh.KeyImportError, ValueError):
                raise ValueError("not a public key (expected 'ssh-ed25519 AAAA...')") from None
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" in value or "/" in value:
            raise ValueError("a host, host:port or [v6]:port (the user goes in user =)")
        try:
            split_host_port(value)
        except ClientError as exc:
            raise ValueError(str(exc)) from None
        return value


class GroupEntry(_Strict):
    """``[groups.NAME]``: only needed for children or group vars."""

    children: list[str] = []
    vars: dict[str, VarValue] = {}


class InventoryFile(_Strict):
    defaults: Defaults = Defaults()
    devices: dict[str, DeviceEntry] = {}
    groups: dict[str, GroupEntry] = {}


class InventoryError(ClientError):
    """An inventory that cannot be used; one line per fault, each with file and line."""

    def __init__(self, source: Path, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


@dataclass(frozen=True)
class Device:
    """One device, resolved: how to reach it and what it is."""

    name: str
    endpoint: Endpoint
    protocol: Literal["auto", "sftp", "scp"]
    groups: tuple[str, ...]
    """Its groups and every group that contains them, in file order."""
    remote_hash: Literal["readback", "sha256sum"] = "readback"
    commands: tuple[str, ...] = ()
    scp_rename: str | None = None
    vars: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Inventory:
    source: Path
    devices: dict[str, Device]
    groups: dict[str, tuple[str, ...]]
    """Group name -> its devices' names (children included)."""

    @classmethod
    def load(cls, path: Path) -> Inventory:
        return load(path)

    def select(self, targets: list[str]) -> list[Device]:
        """The devices ``targets`` name (devices, groups, ``all``), each once, in file order."""
        wanted: set[str] = set()
        unknown = []
        for target in targets:
            if target == "all":
                wanted.update(self.devices)
            elif target in self.devices:
                wanted.add(target)
            elif target in self.groups:
                wanted.update(self.groups[target])
            else:
                unknown.append(target)
        if unknown:
            names = [*self.devices, *self.groups, "all"]
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, names, n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise InventoryError(self.source, [f"no device or group {', '.join(hints)}"])
        return [device for name, device in self.devices.items() if name in wanted]


def load(path: Path) -> Inventory:
    """Read, validate and resolve ``path``; :class:`InventoryError` names every fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(path, ["no such inventory file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(path, [f"cannot read: {exc.__class__.__name__}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(path, [f"not valid TOML: {exc}"]) from None
    try:
        parsed = InventoryFile.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(path, describe_validation(exc, text)) from None
    return _resolve(path, parsed, text)


def describe_validation(exc: ValidationError, text: str) -> list[str]:
    """One line per pydantic fault: ``line N: key.path: message``."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("literal[", "str", "int"))]
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        line = locate(text, loc)
        lines.append((line or 0, f"line {line}: " if line else "", key_of(loc), message))
    return [f"{prefix}{key}: {message}" for _, prefix, key, message in sorted(lines)]


def _resolve(source: Path, parsed: InventoryFile, text: str) -> Inventory:
    base = source.parent
    problems: list[str] = []

    def problem(loc: list[str], message: str) -> None:
        line = locate(text, loc)
        problems.append(f"{f'line {line}: ' if line else ''}{key_of(loc)}: {message}")

    def anchored(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else base / p

    named = {g for d in parsed.devices.values() for g in d.groups} | set(parsed.groups)
    for name in [*parsed.devices, *named]:
        reason = name_problem(name)
        if reason:
            problem(
                ["devices" if name in parsed.devices else "groups", name], f"bad name: {reason}"
            )
    for name in sorted(named & set(parsed.devices)):
        problem(["devices", name], "is also a group name")
    parents: dict[str, list[str]] = {}
    for name, table in parsed.groups.items():
        for child in table.children:
            if child not in named:
                problem(["groups", name, "children"], f"no group {child!r}")
            parents.setdefault(child, []).append(name)

    def ancestry(group: str, seen: tuple[str, ...] = ()) -> list[str]:
        if group in seen:
            problem(["groups", group, "children"], "groups contain each other (a cycle)")
            return []
        found = [group]
        for parent in parents.get(group, []):
            found += [g for g in ancestry(parent, (*seen, group)) if g not in found]
        return found

    defaults = parsed.defaults
    devices: dict[str, Device] = {}
    for name, entry in parsed.devices.items():
        host, port = split_host_port(entry.address)
        if port is not None and entry.port is not None and port != entry.port:
            problem(["devices", name, "port"], f"differs from the address's port {port}")
        groups: list[str] = []
        for group in entry.groups:
            groups += [g for g in ancestry(group) if g not in groups]
        variables: dict[str, Any] = dict(defaults.vars)
        for group in reversed(groups):
            variables.update(parsed.groups[group].vars if group in parsed.groups else {})
        variables.update(entry.vars)
        pinned = entry.host_key is not None
        if pinned and entry.known_hosts is not None:
            problem(["devices", name, "known_hosts"], "give host_key or known_hosts, not both")
        endpoint = Endpoint(
            host,
            port=port or entry.port or defaults.port,
            user=entry.user or defaults.user,
            identity=anchored(entry.identity or defaults.identity),
            jump=entry.jump or defaults.jump,
            host_key=entry.host_key,
            known_hosts=None if pinned else anchored(entry.known_hosts or defaults.known_hosts),
            connect_timeout=entry.connect_timeout or defaults.connect_timeout,
            crypto=entry.crypto or defaults.crypto,
        )
        protocol = entry.protocol or defaults.protocol
        remote_hash = entry.remote_hash or defaults.remote_hash
        commands = tuple(defaults.commands if entry.commands is None else entry.commands)
        scp_rename = entry.scp_rename or defaults.scp_rename
        if scp_rename is not None:
            try:
                check_rename(scp_rename)
            except ClientError as exc:
                problem(["devices", name], str(exc))
        devices[name] = Device(
            name,
            endpoint,
            protocol,
            tuple(groups),
            remote_hash,
            commands,
            scp_rename,
            vars=variables,
        )
    if problems:
        raise InventoryError(source, problems)
    members: dict[str, tuple[str, ...]] = {
        group: tuple(n for n, d in devices.items() if group in d.groups) for group in named
    }
    return Inventory(source, devices, members)
