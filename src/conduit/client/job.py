"""A fleet job file (``JOB.toml``): what to do, to which devices, how carefully.

::

    inventory = "inventory.toml"         # relative to the job file
    kind = "push"                        # push | pull | backup
    targets = ["substation-a"]           # groups or device names
    source = "fw/rtu-4.2.bin"            # a local file (or a list: then destination is a folder)
    destination = "/firmware/{device}/rtu-4.2.bin"
    canary = 1                           # devices done first, alone; any failure stops the job
    wave = 0                             # devices per wave after the canaries (0: all the rest)
    max_failures = 2                     # the job stops once more devices than this failed
    concurrency = 16
    timeout = "5m"                       # per device, all attempts included
    retries = 1                          # more attempts for a device after a failure
    retry_backoff = "2s"                 # doubles after each attempt
    verify = true                        # read each copy back from the device
    skip_unchanged = false               # a device already holding the same bytes: "unchanged"
    pre_check = "systemctl is-active rtu-agent"   # run before the copy (exit 0 to go on) ...
    post_check = "rtu-fw --check"        # ... and after it; only if the device's inventory
                                         # entry lists exactly that command in ``commands``
    report = "out/report"                # writes out/report.json and out/report.html

    # pull and backup: ``source`` names far files or globs, ``destination`` a local folder
    since = "24h"                        # only files modified within 24 h (or an ISO time)
    rotations = true                     # also app.log.1, app.log.2.gz, ... beside each match
    baseline = "20261203T080000.000912Z-1a2b"  # backup: this run, not the last good one
    diff_limit = 65536                   # backup: bytes of unified diff per device (at most)

Unknown keys are refused, with the file, the line and the key. ``{device}``
and ``{group}`` (the device's first group) may appear in ``source`` and
``destination``; no other ``{...}`` may.
"""

from __future__ import annotations

import re
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from conduit.client.errors import ClientError
from conduit.client.inventory import Device, InventoryError, describe_validation
from conduit.config.types import Duration, parse_duration

PLACEHOLDER = re.compile(r"\{[^{}]*\}")
KNOWN = {"{device}", "{group}"}


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inventory: Path
    kind: Literal["push", "pull", "backup"]
    targets: list[str] = Field(min_length=1)
    source: str | list[str]
    destination: str
    canary: int = Field(default=1, ge=0)
    wave: int = Field(default=0, ge=0)
    max_failures: int = Field(default=0, ge=0)
    concurrency: int = Field(default=16, ge=1, le=1024)
    timeout: Annotated[Duration, Field(gt=0)] = 300.0
    retries: int = Field(default=0, ge=0, le=10)
    retry_backoff: Duration = 2.0
    verify: bool = True
    skip_unchanged: bool = False
    pre_check: str | None = None
    post_check: str | None = None
    preserve: bool = False
    report: Path | None = None
    since: str | datetime | None = None
    rotations: bool = False
    baseline: str | None = None
    diff_limit: int = Field(default=65536, ge=0, le=16 << 20)

    @field_validator("since")
    @classmethod
    def _since(cls, value: str | datetime | None) -> str | datetime | None:
        if value is not None:
            since_epoch(value)
        return value

    def since_epoch(self) -> float | None:
        """``since`` as a POSIX time (a duration counts back from now)."""
        return None if self.since is None else since_epoch(self.since)

    @field_validator("source", "destination")
    @classmethod
    def _placeholders(cls, value: str | list[str]) -> str | list[str]:
        for text in [value] if isinstance(value, str) else value:
            if not text:
                raise ValueError("must not be empty")
            unknown = set(PLACEHOLDER.findall(text)) - KNOWN
            if unknown:
                raise ValueError(
                    f"unknown placeholder {sorted(unknown)[0]} ({{device}}, {{group}})"
                )
        return value

    def sources(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)


def since_epoch(value: str | datetime, now: float | None = None) -> float:
    """A duration (``"24h"``: that long before ``now``) or an ISO-8601 time (UTC if no zone)."""
    if isinstance(value, str):
        try:
            return (time.time() if now is None else now) - parse_duration(value)
        except ValueError:
            pass
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither a duration (24h, 7d) nor an ISO time (2026-12-01T00:00)"
            ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def fill(template: str, device: Device) -> str:
    """``template`` with ``{device}`` and ``{group}`` replaced (nothing else is interpreted)."""
    group = device.groups[0] if device.groups else ""
    return template.replace("{device}", device.name).replace("{group}", group)


def load_job(path: Path) -> Job:
    """Read and validate ``path``; relative paths are made absolute to its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(path, ["no such job file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(path, [f"cannot read: {exc.__class__.__name__}"]) from None
    try:
        job = Job.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(path, [f"not valid TOML: {exc}"]) from None
    except ValidationError as exc:
        raise InventoryError(path, describe_validation(exc, text)) from None
    base = path.parent

    def anchored(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else base / p

    if job.kind == "push":
        sources = [str(anchored(Path(s))) for s in job.sources()]
        destination = job.destination
    else:  # far paths stay as given; the local folder is the job's
        sources = job.sources()
        destination = str(anchored(Path(job.destination)))
        if "{" in destination:
            raise ClientError(f"{path}: destination: a local folder takes no placeholder")
    return job.model_copy(
        update={
            "inventory": anchored(job.inventory),
            "destination": destination,
            "source": sources[0] if isinstance(job.source, str) else sources,
            "report": None if job.report is None else anchored(job.report),
        }
    )
