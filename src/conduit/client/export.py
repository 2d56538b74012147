"""Write a parsed Ansible inventory as Conduit's TOML inventory.

Each host gets its effective variables, resolved as Ansible resolves them:
``all`` first, then its groups from the shallowest to the deepest (ties by
name), then the host's own; the connection variables become device keys
(:data:`conduit.client.ansible.CONNECTION`) and the rest ``vars``. Group
membership is kept as the device's direct ``groups`` plus ``[groups.NAME]
children``, so targets such as ``substations`` still select the same hosts.
TOML has no null: a variable set to ``None`` is left out, with a comment.
"""

from __future__ import annotations

import math
import re
from typing import Any

from conduit.client.ansible import CONNECTION, AnsibleError, Parsed

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_IMPLICIT = {"all", "ungrouped"}


def key(name: str) -> str:
    return name if _BARE.match(name) else quote(name)


def quote(text: str) -> str:
    """A TOML basic string; controls and DEL escaped (TOML forbids them raw)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def value(item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if math.isnan(item):
            return "nan"
        return repr(item) if math.isfinite(item) else ("inf" if item > 0 else "-inf")
    if isinstance(item, (list, tuple, set)):
        return "[" + ", ".join(value(v) for v in item if v is not None) + "]"
    if isinstance(item, dict):
        pairs = [f"{key(str(k))} = {value(v)}" for k, v in item.items() if v is not None]
        return "{ " + ", ".join(pairs) + " }" if pairs else "{}"
    return quote(str(item))


def depths(parsed: Parsed) -> dict[str, int]:
    """Each group's depth below ``all`` (the longest path, as Ansible counts it)."""
    found = {"all": 0}
    parents: dict[str, list[str]] = {}
    for name, group in parsed.groups.items():
        for child in group.children:
            parents.setdefault(child, []).append(name)

    def depth(name: str, seen: frozenset[str]) -> int:
        if name in found:
            return found[name]
        above = [p for p in parents.get(name, []) if p not in seen]
        found[name] = 1 + max((depth(p, seen | {name}) for p in above), default=0)
        return found[name]

    for name in parsed.groups:
        depth(name, frozenset())
    return found


def ancestors(parsed: Parsed, group: str) -> set[str]:
    found = {group}
    changed = True
    while changed:
        changed = False
        for name, entry in parsed.groups.items():
            if name not in found and found & set(entry.children):
                found.add(name)
                changed = True
    return found


def resolved(parsed: Parsed, host: str) -> dict[str, Any]:
    level = depths(parsed)
    member: set[str] = {"all"}
    for name, group in parsed.groups.items():
        if host in group.hosts:
            member |= ancestors(parsed, name)
    variables: dict[str, Any] = {}
    for name in sorted(member, key=lambda g: (level.get(g, 1), g)):
        variables.update(parsed.groups[name].vars if name in parsed.groups else {})
    variables.update(parsed.hosts[host])
    return variables


def to_toml(parsed: Parsed, source: str) -> str:
    lines = [f"# Conduit inventory imported from {quote(source)}", ""]
    for name, group in parsed.groups.items():
        children = [c for c in group.children if c not in _IMPLICIT]
        if name in _IMPLICIT or not children:
            continue
        lines += [f"[groups.{key(name)}]", f"children = {value(children)}", ""]
    for host in parsed.hosts:
        variables = resolved(parsed, host)
        device: dict[str, Any] = {}
        for ansible_name, conduit_name in CONNECTION.items():
            if ansible_name in variables:
                found = variables.pop(ansible_name)
                device.setdefault(conduit_name, found)
        address = str(device.pop("address", host))
        port = device.pop("port", None)
        lines.append(f"[devices.{key(host)}]")
        lines.append(f"address = {value(address)}")
        if port is not None:
            if isinstance(port, bool) or not str(port).isdigit():
                raise AnsibleError(f"{source}: host {host}: ansible_port {port!r} is not a number")
            lines.append(f"port = {int(port)}")
        for name in ("user", "identity"):
            if device.get(name) is not None:
                lines.append(f"{name} = {value(str(device[name]))}")
        groups = [g for g, entry in parsed.groups.items() if host in entry.hosts]
        groups = [g for g in groups if g not in _IMPLICIT]
        if groups:
            lines.append(f"groups = {value(groups)}")
        dropped = sorted(k for k, v in variables.items() if v is None)
        kept = {k: v for k, v in variables.items() if v is not None}
        if kept:
            lines.append(f"vars = {value(kept)}")
        if dropped:
            lines.append(f"# left out (null in Ansible): {value(dropped)}")
        lines.append("")
    return "\n".join(lines)
