"""Where areas may live on disk: never over the gateway's own files, never
inside (or around) an area of another zone.

An area is served to users; anything inside its folder is theirs to read or
replace as far as their grants go. So an area must not be the data dir, hold
it, or overlap the journal, the relay state or any key file (host keys,
CA keys, the revocation list, authorized_keys files); and an area of one
zone nested in an area of another would let the outer zone's users reach the
inner zone's files without a conduit. An area in a folder of its own below the
data dir (``data/areas/inbox``, the default layout) touches none of these.

Paths are compared after resolving symbolic links (``os.path.realpath``), so
a link cannot hide an overlap; nothing is created.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from conduit.config.model import Config

Finding = tuple[Literal["error", "warning"], tuple[str, ...], str]


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _private(config: Config) -> list[tuple[str, Path, bool]]:
    """The gateway's own files and folders: (key, path, is a folder)."""
    gw, data = config.gateway, config.gateway.data_dir
    items: list[tuple[str, Path, bool]] = [
        ("gateway.data_dir", data, True),
        ("audit.journal", config.audit.journal, True),
        ("gateway.data_dir (relay state)", data / "relay", True),
    ]
    items += [(f"gateway.host_keys[{i}]", p, False) for i, p in enumerate(gw.host_keys)]
    # who may log in: a user who could write these could let anyone in
    items += [
        (f"gateway.host_certificates[{i}]", p, False) for i, p in enumerate(gw.host_certificates)
    ]
    auth = config.auth
    items += [
        (f"auth.trusted_user_ca_keys[{i}]", p, False)
        for i, p in enumerate(auth.trusted_user_ca_keys)
    ]
    if auth.revoked_keys is not None:
        items.append(("auth.revoked_keys", auth.revoked_keys, False))
    for name, user in config.users.items():
        if user.authorized_keys is not None:
            items.append((f"users.{name}.authorized_keys", user.authorized_keys, False))
    for name, device in config.devices.items():
        for key in ("identity", "password_file", "known_hosts"):
            value = getattr(device, key)
            if value is not None:
                items.append((f"devices.{name}.{key}", value, False))
    for index, sink in enumerate(config.audit.siem):
        for key in ("ca", "cert", "key"):
            value = getattr(sink, key)
            if value is not None:
                items.append((f"audit.siem[{index}].{key}", value, False))
    return items


def layout_problems(config: Config) -> list[Finding]:
    """Every area that overlaps the gateway's files or another zone's area."""
    found: list[Finding] = []
    data = _real(config.gateway.data_dir)
    areas = [(name, _real(area.path), area.zone) for name, area in config.areas.items()]
    private = [(key, _real(path), folder) for key, path, folder in _private(config)]
    for name, path, _zone in areas:
        loc = ("areas", name, "path")
        for key, item, folder in private:
            if key == "gateway.data_dir":
                # Below the data dir in a folder of its own is fine (the default
                # layout); the data dir itself or a folder around it is not.
                if _within(data, path):
                    found.append(
                        (
                            "error",
                            loc,
                            f"{path} is or contains the data dir {data} ({key}):"
                            " users would reach the host key, audit key and journal",
                        )
                    )
                continue
            if _within(item, path) or (folder and _within(path, item)):
                relation = "contains" if _within(item, path) and item != path else "overlaps"
                found.append(
                    (
                        "error",
                        loc,
                        f"{path} {relation} {item} ({key}):"
                        " the gateway's own files must not be served",
                    )
                )
    for index, (name, path, zone) in enumerate(areas):
        for other, other_path, other_zone in areas[index + 1 :]:
            if not (_within(path, other_path) or _within(other_path, path)):
                continue
            inner, outer = (name, other) if _within(path, other_path) else (other, name)
            same = zone == other_zone
            message = f"areas.{inner} lies inside areas.{outer}" + (
                f" (zones {zone!r} and {other_zone!r}): the outer area's users would reach"
                " the inner zone's files without a conduit"
                if not same
                else ": its files are also served through the outer area, under its grants"
            )
            found.append(("warning" if same else "error", ("areas", inner, "path"), message))
    return found
