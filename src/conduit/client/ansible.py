"""Read an Ansible inventory (INI or YAML) and write it as a Conduit inventory.

A faithful reading of Ansible's own formats, without ansible-core:

* **INI**: ``[group]`` host lines (``name [key=value ...]``, split as a shell
  would, values read as Python literals when they are one, as Ansible's
  ``_parse_value`` does), ``[group:vars]`` and ``[group:children]``; hosts
  before any header are ``ungrouped``; ``#`` and ``;`` start comments.
* **YAML**: groups as mappings of ``hosts`` (name -> vars or null),
  ``vars`` and ``children`` (name -> group or null), any number of top-level
  groups (usually ``all``).
* Host patterns in both: ``web[01:20].site``, ``rtu-[a:f]``, with a stride
  ``[0:10:2]``, and ``host:port`` (``[v6::addr]:port`` for IPv6).

Each host's variables are resolved as Ansible does (``all``, then its groups
from the shallowest to the deepest, then the host's own), and the connection
variables become device keys: ``ansible_host`` -> ``address``,
``ansible_port`` -> ``port``, ``ansible_user`` -> ``user``,
``ansible_ssh_private_key_file`` -> ``identity`` (and their old ``ansible_ssh_*``
spellings). Every other variable stays in the device's ``vars``. Host keys are
not in Ansible inventories: the devices fall back to ``~/.ssh/known_hosts``,
as Ansible's SSH connection does.
"""

from __future__ import annotations

import ast
import re
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conduit.client.errors import ClientError

CONNECTION = {
    "ansible_host": "address",
    "ansible_ssh_host": "address",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "identity",
    "ansible_private_key_file": "identity",
}
_HEADER = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:[#;].*)?$")
_RANGE = re.compile(r"\[([^\[\]:]*):([^\[\]:]+)(?::(\d+))?\]")
_IPV6 = re.compile(r"^\[([0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)\](?::(\d+))?$")


class AnsibleError(ClientError):
    """An Ansible inventory that cannot be read: ``file: line N: reason``."""


@dataclass
class Group:
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class Parsed:
    groups: dict[str, Group] = field(default_factory=dict)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Host name -> its own variables (a port from ``host:port`` is ``ansible_port``)."""

    def group(self, name: str) -> Group:
        return self.groups.setdefault(name, Group())

    def add_host(self, group: str, name: str, variables: dict[str, Any]) -> None:
        self.hosts.setdefault(name, {}).update(variables)
        if name not in self.group(group).hosts:
            self.group(group).hosts.append(name)


def parse_value(text: str) -> Any:
    """Ansible's ``_parse_value``: a Python literal if it is one, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return text


def _range(start: str, end: str, step: str | None) -> list[str]:
    stride = int(step) if step else 1
    if stride < 1:
        raise ValueError("a range's step must be at least 1")
    letters = string.ascii_letters
    if start in letters and end in letters and len(start) == len(end) == 1:
        first, last = letters.index(start), letters.index(end)
        return [letters[i] for i in range(first, last + 1, stride)]
    start = start or "0"
    if not (start.isdigit() and end.isdigit()):
        raise ValueError(f"bad range [{start}:{end}]")
    width = len(start) if start.startswith("0") and len(start) > 1 else 0
    if width and width != len(end):
        raise ValueError("a zero-padded range needs begin and end of equal length")
    return [str(n).zfill(width) for n in range(int(start), int(end) + 1, stride)]


def expand(pattern: str) -> tuple[list[str], int | None]:
    """``web[01:03].x:2222`` -> (["web01.x", "web02.x", "web03.x"], 2222)."""
    v6 = _IPV6.match(pattern)
    if v6 and v6[1].count(":") >= 2:
        return [v6[1]], int(v6[2]) if v6[2] else None
    outside = re.sub(r"\[[^\]]*\]", lambda m: "_" * len(m[0]), pattern)
    port = None
    if outside.count(":") == 1:
        head, _, tail = pattern.rpartition(":")
        if not tail.isdigit():
            raise ValueError(f"bad port in {pattern!r}")
        pattern, port = head, int(tail)
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern], port
    names = []
    for middle in _range(match[1], match[2], match[3]):
        rest, _ = expand(pattern[: match.start()] + middle + pattern[match.end() :])
        names += rest
    return names, port


def parse_ini(text: str, source: Path) -> Parsed:
    parsed = Parsed()
    parsed.group("all")
    group, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        try:
            header = _HEADER.match(line)
            if line.startswith("["):
                if header is None:
                    raise ValueError(f"not a section header: {line!r}")
                group, kind = header[1], header[2] or "hosts"
                if kind not in ("hosts", "vars", "children"):
                    raise ValueError(f"unknown section kind {kind!r} (vars or children)")
                parsed.group(group)
            elif kind == "vars":
                key, equals, value = line.partition("=")
                if not equals or not key.strip():
                    raise ValueError(f"expected key=value, got {line!r}")
                parsed.group(group).vars[key.strip()] = parse_value(value.strip())
            elif kind == "children":
                child = line.split()[0]
                parsed.group(child)
                if child not in parsed.group(group).children:
                    parsed.group(group).children.append(child)
            else:
                tokens = shlex.split(line, comments=True)
                variables: dict[str, Any] = {}
                for token in tokens[1:]:
                    key, equals, value = token.partition("=")
                    if not equals or not key:
                        raise ValueError(f"expected key=value host variable, got {token!r}")
                    variables[key] = parse_value(value)
                names, port = expand(tokens[0])
                if port is not None:
                    variables.setdefault("ansible_port", port)
                for name in names:
                    parsed.add_host(group, name, variables)
        except ValueError as exc:
            raise AnsibleError(f"{source}: line {number}: {exc}") from None
    return parsed


def parse_yaml(text: str, source: Path) -> Parsed:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise AnsibleError(f"{source}: {where}not valid YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AnsibleError(f"{source}: the top level must be a mapping of groups")
    parsed = Parsed()
    parsed.group("all")

    def walk(name: str, body: Any, where: str) -> None:
        group = parsed.group(str(name))
        if body is None:
            return
        if not isinstance(body, dict):
            raise AnsibleError(f"{source}: {where}: a group must be a mapping")
        for key in body:
            if key not in ("hosts", "vars", "children"):
                raise AnsibleError(f"{source}: {where}.{key}: unknown key (hosts, vars, children)")
        for key, kind in (("hosts", dict), ("vars", dict), ("children", dict)):
            if body.get(key) is not None and not isinstance(body[key], kind):
                raise AnsibleError(f"{source}: {where}.{key}: must be a mapping")
        group.vars.update(body.get("vars") or {})
        for pattern, variables in (body.get("hosts") or {}).items():
            if variables is not None and not isinstance(variables, dict):
                raise AnsibleError(f"{source}: {where}.hosts.{pattern}: vars must be a mapping")
            try:
                names, port = expand(str(pattern))
            except ValueError as exc:
                raise AnsibleError(f"{source}: {where}.hosts.{pattern}: {exc}") from None
            own = dict(variables or {})
            if port is not None:
                own.setdefault("ansible_port", port)
            for host in names:
                parsed.add_host(str(name), host, own)
        for child, child_body in (body.get("children") or {}).items():
            if str(child) not in group.children:
                group.children.append(str(child))
            walk(str(child), child_body, f"{where}.children.{child}")

    for name, body in data.items():
        walk(str(name), body, str(name))
    return parsed


def read(path: Path, kind: str | None = None) -> Parsed:
    """Parse ``path`` as ``kind`` (``ini``/``yaml``; by default from its suffix, else INI)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnsibleError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnsibleError(f"{path}: cannot read: {exc.__class__.__name__}") from None
    if kind is None:
        kind = "yaml" if path.suffix in (".yml", ".yaml") else "ini"
    return parse_yaml(text, path) if kind == "yaml" else parse_ini(text, path)
