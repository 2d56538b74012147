"""``Fleet``: one job across many devices, carefully.

A job (:meth:`Fleet.push`, :meth:`Fleet.pull`, :meth:`Fleet.backup`: one
loop, :meth:`Fleet.run`, with a per-device action) runs in steps: the
**canaries** (the first ``canary`` devices, one at a time) and then
**waves** of ``wave`` devices (0: all the rest), at most ``concurrency``
devices at once. Any canary failure stops the job; after
that, once more than ``max_failures`` devices failed, no further device is
started (those still running finish) and the rest are ``skipped``. Each
device gets ``timeout`` seconds for everything (connecting, every attempt,
the backoff between them), so a device that hangs or drops mid-transfer
costs its own slot and nothing else. A failure is retried ``retries`` times
after ``retry_backoff`` (doubling), except those a retry cannot cure (a host
key that does not match, a refused login). :meth:`Fleet.stop` (Ctrl-C) stops
starting devices and cancels those running; the report says what was done.

Each device's result is a receipt: the SHA-256 the device's copy was read
back with (``verify``), the bytes, its files, when it started and ended, how
many attempts it took, and the error if any. Pull and backup live in
:mod:`conduit.client.pull` and :mod:`conduit.client.backup`.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import posixpath
import shlex
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from conduit.client.client import Client
from conduit.client.common import hash_file
from conduit.client.errors import ClientError
from conduit.client.inventory import Device
from conduit.client.job import Job, fill

Status = Literal["ok", "failed", "skipped", "unchanged", "changed"]
MAX_BACKOFF = 60.0


@dataclass
class DeviceResult:
    """One device's receipt (the report's ``devices`` entries)."""

    name: str
    status: Status = "skipped"
    sha256: str | None = None
    bytes: int = 0
    error: str | None = None
    diff: str | None = None
    destination: list[str] = field(default_factory=list)
    verified: bool = False
    protocol: str | None = None
    attempts: int = 0
    started: str | None = None
    finished: str | None = None
    seconds: float = 0.0
    step: str = ""
    """``canary`` or ``wave N``."""
    checks: list[dict[str, Any]] = field(default_factory=list)
    """Pre/post checks run: ``{"when", "command", "exit", "output"}``."""
    files: list[dict[str, Any]] = field(default_factory=list)
    """Pull/backup: one entry per file (``remote``, ``local``, ``sha256``, ``bytes``, ...)."""
    baseline: str | None = None
    """Backup: the run this device was compared with."""
    gateway: bool = False
    """The device is a Conduit gateway: its journal holds each transfer (same SHA-256)."""
    journal: list[dict[str, Any]] = field(default_factory=list)
    """Through a gateway: how to find each transfer's journal record (see journal_links)."""


Action = Callable[[Device, DeviceResult], Awaitable[None]]
"""One attempt at one device (a push, pull or backup of it)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def plan(devices: list[Device], canary: int, wave: int) -> list[tuple[str, list[Device]]]:
    """The steps: each canary alone, then waves of ``wave`` devices (0: one wave)."""
    steps: list[tuple[str, list[Device]]] = [("canary", [d]) for d in devices[:canary]]
    rest = devices[canary:]
    size = wave or len(rest) or 1
    for number, start in enumerate(range(0, len(rest), size), start=1):
        steps.append((f"wave {number}", rest[start : start + size]))
    return steps


class Fleet:
    """Run a :class:`~conduit.client.job.Job` over the devices it targets."""

    def __init__(
        self,
        job: Job,
        devices: list[Device],
        *,
        on_result: Callable[[DeviceResult], None] | None = None,
        **client_options: Any,
    ) -> None:
        self.job = job
        self.devices = devices
        self.on_result = on_result
        self.client_options = client_options
        self.results = {d.name: DeviceResult(d.name) for d in devices}
        self.steps = plan(devices, job.canary, job.wave)
        for step, members in self.steps:
            for device in members:
                self.results[device.name].step = step
        self.stopping = False
        self.interrupted = False
        self._running: set[asyncio.Task[None]] = set()
        self._hashes: dict[Path, str] = {}

    def stop(self) -> None:
        """Start no further device and cancel the running ones (Ctrl-C)."""
        self.stopping = self.interrupted = True
        for task in self._running:
            task.cancel()

    def failures(self) -> int:
        return sum(r.status == "failed" for r in self.results.values())

    async def push(self) -> dict[str, Any]:
        """Run the push; return the report (see :meth:`report`)."""
        sources = [Path(s) for s in self.job.sources()]
        for source in sources:
            if "{" not in str(source) and not source.is_file():
                raise ClientError(f"{source}: no such local file to push")

        async def action(device: Device, result: DeviceResult) -> None:
            await self._push_once(device, sources, result)

        return await self.run(action)

    async def pull(self) -> dict[str, Any]:
        """Run the pull: every device's matching files into ``destination/DEVICE/...``."""
        from conduit.client.pull import pull_device

        out = Path(self.job.destination)

        async def action(device: Device, result: DeviceResult) -> None:
            async with self.client(device) as client:
                result.protocol = client.protocol
                result.gateway = client.gateway
                await pull_device(client, device, self.job, out, result)

        return await self.run(action)

    async def backup(self) -> dict[str, Any]:
        """Run the backup into the store at ``destination``; its run index is written last."""
        from conduit.client.backup import Backup

        backup = Backup(self.job)

        async def action(device: Device, result: DeviceResult) -> None:
            async with self.client(device) as client:
                result.protocol = client.protocol
                result.gateway = client.gateway
                await backup.device(client, device, result)

        report = await self.run(action)
        backup.finish(report)
        return report

    def client(self, device: Device) -> Client:
        """A client for ``device`` as its inventory entry describes it."""
        return Client(
            device.endpoint,
            protocol=device.protocol,
            remote_hash=device.remote_hash,
            scp_rename=device.scp_rename,
            **self.client_options,
        )

    async def run(self, action: Action) -> dict[str, Any]:
        """Run ``action`` per device in canary/wave order; return the report."""
        began = time.monotonic()
        started = _now()
        semaphore = asyncio.Semaphore(self.job.concurrency)
        for _step, devices in self.steps:
            if self.stopping:
                break

            async def one(device: Device) -> None:
                async with semaphore:
                    if self.stopping:
                        return
                    await self._device(device, action)
                    if self.failures() > self.job.max_failures or (
                        self.results[device.name].step == "canary"
                        and self.results[device.name].status == "failed"
                    ):
                        self.stopping = True

            tasks = [asyncio.create_task(one(d)) for d in devices]
            self._running.update(tasks)
            await asyncio.gather(*tasks, return_exceptions=True)
            self._running.difference_update(tasks)
        return self.report(started, time.monotonic() - began)

    async def _device(self, device: Device, action: Action) -> None:
        result = self.results[device.name]
        result.started = _now()
        began = time.monotonic()
        try:
            await asyncio.wait_for(self._attempts(device, action, result), self.job.timeout)
            if result.status not in ("unchanged", "changed"):
                result.status = "ok"
        except asyncio.CancelledError:
            result.status, result.error = "failed", "interrupted (the job was stopped)"
        except TimeoutError:
            result.status = "failed"
            result.error = f"{device.name}: no result within {self.job.timeout:g} s (timeout)"
        except ClientError as exc:
            result.status, result.error = "failed", str(exc)
        result.finished = _now()
        result.seconds = round(time.monotonic() - began, 3)
        if result.gateway and result.status != "failed":
            result.journal = journal_links(self.job.kind, device, result)
        if self.on_result:
            self.on_result(result)

    async def _attempts(self, device: Device, action: Action, result: DeviceResult) -> None:
        delay = self.job.retry_backoff
        while True:
            result.attempts += 1
            try:
                await action(device, result)
                return
            except ClientError as exc:
                if not exc.retryable or result.attempts > self.job.retries:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _push_once(self, device: Device, sources: list[Path], result: DeviceResult) -> None:
        destination = fill(self.job.destination, device)
        async with self.client(device) as client:
            result.protocol = client.protocol
            result.gateway = client.gateway
            await self._check(client, device, "pre", self.job.pre_check, result)
            digests, sent, unchanged = [], 0, 0
            result.destination, result.files = [], []
            for template in sources:
                local = Path(fill(str(template), device))
                target = destination
                if len(sources) > 1:
                    target = posixpath.join(destination, local.name)
                if self.job.skip_unchanged and await self._same(client, local, target):
                    digests.append(self._local_hash(local))
                    result.destination.append(target)
                    result.files.append(
                        {"remote": target, "local": str(local), "sha256": digests[-1],
                         "bytes": 0, "kept": "unchanged"}
                    )  # fmt: skip
                    unchanged += 1
                    continue
                [copy] = await client.put(
                    local, target, preserve=self.job.preserve, verify=self.job.verify
                )
                digests.append(copy.sha256)
                sent += copy.bytes
                result.destination.append(copy.destination)
                result.files.append(
                    {"remote": copy.destination, "local": str(local), "sha256": copy.sha256,
                     "bytes": copy.bytes, "kept": "sent"}
                )  # fmt: skip
            result.sha256 = digests[0] if len(digests) == 1 else _combined(digests)
            result.bytes = sent
            result.verified = self.job.verify or unchanged == len(sources)
            await self._check(client, device, "post", self.job.post_check, result)
            if unchanged == len(sources):
                result.status = "unchanged"

    async def _check(
        self, client: Client, device: Device, when: str, command: str | None, result: DeviceResult
    ) -> None:
        """Run a pre/post check the device's profile allows; a failure fails the device."""
        if command is None:
            return
        if command not in device.commands:
            raise ClientError(
                f"{device.name}: {when}_check {command!r} is not among the commands its "
                "inventory entry allows",
                retryable=False,
            )
        status, output = await client.run(command, timeout=self.job.timeout)
        result.checks.append({"when": when, "command": command, "exit": status, "output": output})
        if status != 0:
            raise ClientError(
                f"{device.name}: {when}_check {command!r} failed (exit {status}): {output}",
                retryable=False,
            )

    def _local_hash(self, local: Path) -> str:
        if local not in self._hashes:
            self._hashes[local] = hash_file(local)[0].hexdigest()
        return self._hashes[local]

    async def _same(self, client: Client, local: Path, target: str) -> bool:
        """Whether the device already holds ``local`` at ``target`` (its hash says so)."""
        try:
            far = await client.sha256(target)
        except ClientError:
            return False  # absent, a folder, or no way to hash it: push
        return far == self._local_hash(local)

    def report(self, started: str, seconds: float) -> dict[str, Any]:
        """The JSON report: ``job``, ``devices`` (one receipt each), ``summary``."""
        devices = [asdict(self.results[d.name]) for d in self.devices]
        kinds = ("ok", "unchanged", "changed", "failed", "skipped")
        counts = {s: sum(d["status"] == s for d in devices) for s in kinds}
        job = self.job.model_dump(mode="json")
        job.update(
            {
                "started": started,
                "finished": _now(),
                "seconds": round(seconds, 3),
                "user": _user(),
                "host": socket.gethostname(),
                "interrupted": self.interrupted,
            }
        )
        return {
            "schema": 1,
            "job": job,
            "devices": devices,
            "summary": {
                **counts,
                "total": len(devices),
                "success": counts["ok"] + counts["unchanged"] + counts["changed"] == len(devices),
            },
        }


JOURNAL_SLACK = timedelta(seconds=60)
"""Either side of a device's time window when searching the gateway's journal (clocks)."""


def journal_links(kind: str, device: Device, result: DeviceResult) -> list[dict[str, Any]]:
    """Where the gateway journalled each transfer of ``result``.

    A Conduit gateway journals every upload and download with its user, path,
    byte count and SHA-256 (``file.upload`` / ``file.download``) but does not
    tell the client the record's sequence number; a record is found by those
    fields within the device's time window (a minute either side), which is
    what ``search`` spells out as a ``conduit audit search`` command line.
    """
    kind_type = "file.upload" if kind == "push" else "file.download"
    assert result.started is not None and result.finished is not None
    since = (datetime.fromisoformat(result.started) - JOURNAL_SLACK).strftime(ISO_SECONDS)
    until = (datetime.fromisoformat(result.finished) + JOURNAL_SLACK).strftime(ISO_SECONDS)
    links = []
    for entry in result.files:
        if entry.get("kept") == "unchanged":
            continue  # nothing was transferred, nothing journalled
        search = [
            "conduit audit search", f"--type {kind_type}", f"--sha256 {entry['sha256']}",
            f"--since {since}", f"--until {until}",
        ]  # fmt: skip
        if device.endpoint.user:
            search.insert(2, f"--user {shlex.quote(device.endpoint.user)}")
        links.append(
            {
                "type": kind_type,
                "user": device.endpoint.user,
                "path": entry["remote"],
                "sha256": entry["sha256"],
                "bytes": entry["bytes"],
                "since": since,
                "until": until,
                "search": " ".join(search),
            }
        )
    return links


ISO_SECONDS = "%Y-%m-%dT%H:%M:%SZ"


def _combined(digests: list[str]) -> str:
    """One hash for several files: SHA-256 of their hashes, in order."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
