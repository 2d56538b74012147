"""Read ``conduit.toml`` into a :class:`Config`, with errors a person can act on."""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from conduit.config.model import Config


class ConfigError(Exception):
    """A policy file that cannot be used. ``problems`` holds one line per fault."""

    def __init__(self, source: Path | None, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        where = str(source) if source else "<embedded>"
        super().__init__("\n".join(f"{where}: {p}" for p in problems))


def load(path: Path | str) -> Config:
    """Load, validate shape and make every relative path absolute to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, ["no such file (create one with `conduit init`)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"cannot read: {exc.__class__.__name__}"]) from None
    return parse(text, source=path.resolve())


def parse(text: str, source: Path | None = None) -> Config:
    """Parse TOML text; ``source`` locates relative paths and error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # "Expected '=' ... (at line 3, column 5)": lead with the line, as every other error.
        where = re.search(r"\(at line (\d+), column (\d+)\)$", str(exc))
        if where is None:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
        reason = str(exc)[: where.start()].rstrip()
        line, column = where.groups()
        raise ConfigError(
            source, [f"line {line}: not valid TOML: {reason} (column {column})"]
        ) from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _describe_all(exc.errors(), text)) from None
    base = source.parent if source else Path.cwd()
    return absolutize(config, base).model_copy(update={"source": source})


def absolutize(config: Config, base: Path) -> Config:
    """Return ``config`` with every file-system path anchored at ``base``."""

    def fix(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p)

    gw = config.gateway
    gateway = gw.model_copy(
        update={
            "data_dir": fix(gw.data_dir),
            "host_keys": [fix(k) for k in gw.host_keys],
            "host_certificates": [fix(c) for c in gw.host_certificates],
        }
    )
    audit = config.audit.model_copy(
        update={
            "journal": fix(config.audit.journal),
            "anchor_dirs": [fix(d) for d in config.audit.anchor_dirs],
            "siem": [
                s.model_copy(update={"ca": fix(s.ca), "cert": fix(s.cert), "key": fix(s.key)})
                for s in config.audit.siem
            ],
        }
    )
    areas = {n: a.model_copy(update={"path": fix(a.path)}) for n, a in config.areas.items()}
    devices = {
        n: d.model_copy(
            update={
                "identity": fix(d.identity),
                "password_file": fix(d.password_file),
                "known_hosts": fix(d.known_hosts),
            }
        )
        for n, d in config.devices.items()
    }
    users = {
        n: u.model_copy(update={"authorized_keys": fix(u.authorized_keys)})
        for n, u in config.users.items()
    }
    auth = config.auth.model_copy(
        update={
            "trusted_user_ca_keys": [fix(k) for k in config.auth.trusted_user_ca_keys],
            "revoked_keys": fix(config.auth.revoked_keys),
        }
    )
    trust = {
        n: t.model_copy(
            update={
                "ssh_allowed_signers": fix(t.ssh_allowed_signers),
                "openpgp_keys": [fix(k) for k in t.openpgp_keys],
                "sha256_lists": [fix(k) for k in t.sha256_lists],
            }
        )
        for n, t in config.inspect.trust.items()
    }
    scan = config.inspect.scan
    if scan.clamd and scan.clamd.startswith("unix:"):  # a socket path, relative to the file
        scan = scan.model_copy(update={"clamd": f"unix:{fix(Path(scan.clamd[5:]))}"})
    inspect = config.inspect.model_copy(update={"trust": trust, "scan": scan})
    return config.model_copy(
        update={
            "gateway": gateway,
            "audit": audit,
            "areas": areas,
            "devices": devices,
            "users": users,
            "auth": auth,
            "inspect": inspect,
        }
    )


def key_of(loc: Sequence[str]) -> str:
    """``("roles", "x", "grants", "0", "target")`` -> ``roles.x.grants[0].target``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(top level)"


def _is_member_tag(part: str) -> bool:
    """pydantic names the member of a union it tried (``str``, ``list[str]``, ...)."""
    return "[" in part or part in {"str", "int", "float", "bool", "list", "dict", "none"}


def _keys_at(loc: Sequence[str]) -> list[str]:
    """The keys the table at ``loc`` may hold (for "did you mean"), or none."""
    model: Any = Config
    expect_name = False
    for part in loc:
        if expect_name or part.isdigit():
            expect_name = False
            continue
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        field = model.model_fields.get(part) if is_model else None
        if field is None:
            return []
        model = field.annotation
        while typing.get_origin(model) in (list, dict):
            expect_name = typing.get_origin(model) is dict
            model = typing.get_args(model)[-1]
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [f.alias or name for name, f in model.model_fields.items() if name != "source"]


def _describe_all(errors: list[Any], text: str) -> list[str]:
    """One line per fault: union members merged, a misspelt key reported once.

    A misspelt required key is two pydantic errors ("levle: unknown key",
    "level: Field required"); they are one mistake, so they become one line
    with a suggestion. A value no member of a union accepts is one line too.
    """
    merged: dict[tuple[str, ...], list[str]] = {}
    unknown: dict[tuple[str, ...], None] = {}
    missing: set[tuple[str, ...]] = set()
    for err in errors:
        loc = tuple(str(part) for part in err["loc"])
        clean = tuple(part for part in loc if not _is_member_tag(part))
        if err["type"] == "extra_forbidden":
            unknown[clean] = None
            continue
        if err["type"] == "missing":
            missing.add(clean)
        message = str(err["msg"]).removeprefix("Value error, ")
        messages = merged.setdefault(clean, [])
        if message not in messages:
            messages.append(message)
    explained: dict[tuple[str, ...], str] = {}
    for loc in unknown:
        *parent, name = loc
        siblings = [m[-1] for m in missing if list(m[:-1]) == parent]
        close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
        if close:
            missing.discard((*parent, close[0]))
            merged.pop((*parent, close[0]), None)
            explained[loc] = f"unknown key (did you mean {close[0]!r}?)"
            continue
        close = difflib.get_close_matches(name, _keys_at(parent), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        explained[loc] = f"unknown key{hint}"
    for loc, messages in merged.items():
        explained[loc] = " or ".join(
            [messages[0]] + [m.removeprefix("Input should be ") for m in messages[1:]]
        )
    lines = []
    for loc, message in explained.items():
        line = locate(text, list(loc))
        prefix = f"line {line}: " if line else ""
        lines.append((line or 0, f"{prefix}{key_of(loc)}: {message}"))
    return [entry for _, entry in sorted(lines, key=lambda item: item[0])]


def locate(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of the deepest part of ``loc`` found in ``text``.

    TOML parsers do not report positions, so search for the table header and
    then the key below it; good enough to point a person at the right line.
    """
    lines = text.splitlines()
    start = 0
    found: int | None = None
    previous = ""
    for part in loc:
        if part.isdigit():
            line = _item_line(lines, start, int(part), previous)
            if line is not None:
                start, found = line, line + 1
            continue
        previous = part
        # A key of an inline table sits on the line already found.
        inline = re.compile(rf"""[{{,]\s*["']?{re.escape(part)}["']?\s*=""")
        if found is not None and inline.search(lines[start]):
            continue
        pattern = re.compile(
            rf"""^\s*(\[+[^\]]*\b{re.escape(part)}\b[^\]]*\]+|["']?{re.escape(part)}["']?\s*=)"""
        )
        for number in range(start, len(lines)):
            if pattern.search(lines[number]):
                found = number + 1
                start = number
                break
    return found


def _item_line(lines: list[str], start: int, index: int, name: str) -> int | None:
    """Line (0-based) of item ``index`` of array ``name``: ``[[name]]`` or ``name = [...]``."""
    header = re.compile(rf"^\s*\[\[[^\]]*\b{re.escape(name)}\]\]")
    tables = [n for n in range(start, len(lines)) if header.search(lines[n])]
    if tables:
        return tables[index] if index < len(tables) else None
    items: list[int] = []
    depth = 0
    for number in range(start, len(lines)):
        text = lines[number].split("#", 1)[0]
        if number == start:
            text = text.split("=", 1)[-1]
        count = text.count("{") or len([t for t in text.strip(" []").split(",") if t.strip()])
        items.extend([number] * count)
        depth += text.count("[") - text.count("]")
        if depth <= 0:
            break
    if not items:
        return None
    return items[min(index, len(items) - 1)]
