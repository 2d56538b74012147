"""Read ``conduit.toml`` into a :class:`Config`, with errors a person can act on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

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
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err, text) for err in exc.errors()]) from None
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
    return config.model_copy(
        update={"gateway": gateway, "audit": audit, "areas": areas, "devices": devices}
    )


def _describe(err: Any, text: str) -> str:
    """One line for one pydantic error: ``line N: key.path: message``."""
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc) if loc else "(top level)"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    line = locate(text, loc)
    prefix = f"line {line}: " if line else ""
    return f"{prefix}{key}: {message}"


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
