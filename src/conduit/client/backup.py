"""Backup: device configs into a versioned, content-addressed local store, with drift.

The store is the job's ``destination`` folder::

    STORE/objects/ab/abcdef...    one file per distinct content, named by its SHA-256
    STORE/runs/RUN-ID.json        one index per run: each device's status and files

A run fetches every file the ``source`` patterns match (as a pull does, see
:mod:`conduit.client.pull`: globs, ``rotations``, ``since``; hidden scratch
folder, removed whatever happens), stores only contents the store does not
hold yet (a hard link from the scratch file, never a rewrite: an object's name
*is* its hash), and compares the device's files with its **baseline**: the
run named by ``baseline = "RUN-ID"`` (pinned), else the newest run in which
the device was ``ok``, ``unchanged`` or ``changed`` (the last good one). The
device's status says what it found:

- ``ok``: the first backup of this device (nothing to compare with);
- ``unchanged``: the same files with the same hashes as the baseline;
- ``changed``: a file was added, removed or differs; ``diff`` holds a unified
  diff per text file (UTF-8 without NUL, each side at most ``TEXT_LIMIT``),
  ``Binary PATH: OLD -> NEW`` hashes otherwise, the whole capped at the job's
  ``diff_limit`` bytes;
- ``failed``: fetching failed, or a pinned baseline holds no backup of it.

The run index is written last, to a temp name and renamed: a run stopped by
Ctrl-C still gets one (its devices' statuses say what was done), and a
reader never sees half of one. Run ids sort by time, to the microsecond
(``20261203T081500.042137Z-1a2b``).
"""

from __future__ import annotations

import difflib
import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conduit.client.client import Client
from conduit.client.common import LocalFault
from conduit.client.errors import ClientError, describe
from conduit.client.inventory import Device
from conduit.client.job import Job
from conduit.client.pull import combined, fetch

if TYPE_CHECKING:
    from conduit.client.fleet import DeviceResult

GOOD = ("ok", "unchanged", "changed")
TEXT_LIMIT = 1 << 20
"""Files larger than this are compared by hash only."""


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ-") + secrets.token_hex(2)


class Store:
    """The content-addressed store and its run indexes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.runs = root / "runs"

    def object_path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256

    def keep(self, path: Path, sha256: str) -> bool:
        """Store ``path`` under its hash unless it is there; True if it was new."""
        target = self.object_path(sha256)
        if target.is_file():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except FileExistsError:
            return False
        return True

    def run_ids(self) -> list[str]:
        return sorted(p.stem for p in self.runs.glob("*.json")) if self.runs.is_dir() else []

    def load_run(self, run_id: str) -> dict[str, Any]:
        path = self.runs / f"{run_id}.json"
        if "/" in run_id or run_id.startswith(".") or not path.is_file():
            known = self.run_ids()[-3:]
            raise ClientError(
                f"{self.root}: no run {run_id!r} in the store"
                + (f" (latest: {', '.join(known)})" if known else " (it holds no run)")
            )
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ClientError(f"{path}: unreadable run index ({exc})") from None
        return data

    def last_good(self, device: str, runs: list[str]) -> tuple[str, dict[str, Any]] | None:
        for run_id in reversed(runs):
            try:
                entry = self.load_run(run_id).get("devices", {}).get(device)
            except ClientError:
                continue  # a damaged index is not a baseline
            if entry and entry.get("status") in GOOD:
                return run_id, entry
        return None

    def write_run(self, run_id: str, data: dict[str, Any]) -> Path:
        self.runs.mkdir(parents=True, exist_ok=True)
        target = self.runs / f"{run_id}.json"
        temp = target.with_name(f".{target.name}.tmp")
        temp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(temp, target)
        return target

    def text(self, sha256: str) -> list[str] | None:
        """The object's lines, if it is a small UTF-8 text without NUL."""
        path = self.object_path(sha256)
        try:
            if path.stat().st_size > TEXT_LIMIT:
                return None
            data = path.read_bytes()
        except OSError:
            return None
        if b"\0" in data:
            return None
        try:
            return data.decode("utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            return None


class Backup:
    """One backup run: per device :meth:`device`, then :meth:`finish` writes the index."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.store = Store(Path(job.destination))
        self.run_id = new_run_id()
        self.started = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.earlier = self.store.run_ids()
        self.pinned = None if job.baseline is None else self.store.load_run(job.baseline)
        self.files: dict[str, dict[str, dict[str, Any]]] = {}

    def baseline(self, device: str) -> tuple[str, dict[str, Any]] | None:
        if self.job.baseline is not None:
            assert self.pinned is not None
            entry = self.pinned.get("devices", {}).get(device)
            if not entry or entry.get("status") not in GOOD:
                raise ClientError(
                    f"{device}: the baseline run {self.job.baseline} holds no good backup of it",
                    retryable=False,
                )
            return self.job.baseline, entry
        return self.store.last_good(device, self.earlier)

    async def device(self, client: Client, device: Device, result: DeviceResult) -> None:
        scratch = self.store.root / f".{device.name}.conduit-part"
        shutil.rmtree(scratch, ignore_errors=True)
        files: dict[str, dict[str, Any]] = {}
        try:
            for item in await fetch(client, device, self.job, scratch, self.job.verify):
                stored = self.store.keep(item.path, item.sha256)
                files[item.remote] = {
                    "sha256": item.sha256,
                    "bytes": item.bytes,
                    "mtime": item.mtime,
                    "verified": item.verified,
                    "stored": stored,
                    "local": str(self.store.object_path(item.sha256)),
                }
        except OSError as exc:
            raise ClientError(describe(LocalFault.of(exc), str(self.store.root))) from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.files[device.name] = files
        result.files = [{"remote": remote, **entry} for remote, entry in sorted(files.items())]
        result.bytes = sum(f["bytes"] for f in files.values())
        result.sha256 = combined([files[r]["sha256"] for r in sorted(files)])
        result.destination = [f["local"] for f in result.files]
        result.verified = bool(files) and all(f["verified"] for f in files.values())
        base = self.baseline(device.name)
        if base is None:
            result.status = "ok"
            return
        run_id, entry = base
        result.baseline = run_id
        old = {remote: f["sha256"] for remote, f in entry.get("files", {}).items()}
        new = {remote: f["sha256"] for remote, f in files.items()}
        if old == new:
            result.status = "unchanged"
            return
        result.status = "changed"
        result.diff = self.diff(old, new, run_id)

    def diff(self, old: dict[str, str], new: dict[str, str], baseline: str) -> str:
        """Unified diffs of the text files that differ, hashes for the rest; capped."""
        parts: list[str] = []
        for remote in sorted(old.keys() | new.keys()):
            before, after = old.get(remote), new.get(remote)
            if before == after:
                continue
            a = [] if before is None else self.store.text(before)
            b = [] if after is None else self.store.text(after)
            if a is None or b is None:
                parts.append(f"Binary {remote}: {before or 'absent'} -> {after or 'absent'}\n")
                continue
            lines = difflib.unified_diff(
                a, b, f"{remote}@{baseline}", f"{remote}@{self.run_id}", lineterm="\n"
            )
            parts.append("".join(line if line.endswith("\n") else line + "\n" for line in lines))
        text = "".join(parts)
        limit = self.job.diff_limit
        if len(text.encode()) > limit:
            text = text.encode()[:limit].decode("utf-8", "ignore")
            text += f"\n... (diff truncated at {limit} bytes)\n"
        return text

    def finish(self, report: dict[str, Any]) -> None:
        """Write the run index (every targeted device, whatever its status) and name it
        in ``report`` (``run``, ``store``)."""
        devices = {
            d["name"]: {
                "status": d["status"],
                "error": d["error"],
                "baseline": d["baseline"],
                "files": self.files.get(d["name"], {}) if d["status"] in GOOD else {},
            }
            for d in report["devices"]
        }
        index = {
            "run": self.run_id,
            "started": self.started,
            "finished": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "targets": self.job.targets,
            "source": self.job.source,
            "baseline": self.job.baseline,
            "devices": devices,
        }
        report["run"] = self.run_id
        report["store"] = str(self.store.root)
        try:
            report["index"] = str(self.store.write_run(self.run_id, index))
        except OSError as exc:  # the devices' results stand; the run cannot be a baseline
            report["index"] = None
            report["index_error"] = describe(LocalFault.of(exc), str(self.store.runs))
            report["summary"]["success"] = False
