"""Pull: far files by path or glob from one device into ``OUT/DEVICE/...``.

Each ``source`` (``{device}``/``{group}`` filled in) is a far path or a glob
(``*``, ``?``, ``[...]``; over SFTP also ``**``). With ``rotations`` every
match also brings its rotated siblings (``app.log.1``, ``app.log.2.gz``:
the name, a dot and a digit); with ``since`` only files modified at or after
that time are kept. A far file ``/var/log/app.log`` lands at
``OUT/DEVICE/var/log/app.log``, so two patterns cannot collide.

Why it is safe to run every night into the same folder:

- **nothing partial under a final name**: files arrive in the hidden folder
  ``OUT/.DEVICE.conduit-part/`` (each under its own hidden partial name, see
  :mod:`conduit.client.common`), are hashed, and only then linked to their
  final name; the hidden folder is removed whatever happens, so a disk that
  fills up fails that device with nothing left behind, and the other devices
  go on;
- **nothing overwritten silently**: a final name that already holds the same
  bytes is left alone (``"kept": "same"``); one that holds other bytes is kept
  too, and the new file is stored beside it as ``NAME~SHA8`` (the first eight
  hex digits of its SHA-256), so a re-run is idempotent and both versions
  survive. The file entry says ``"kept": "beside"`` and names the path used;
- **a pattern that matches nothing fails the device** (``no file matches``):
  a log that is not where the job says is something to look at. A pattern
  whose matches are all older than ``since`` is fine (nothing to fetch);
- far names become local names only when :func:`conduit.names.name_problem`
  accepts every part (no ``..``, controls, bidi), so a hostile device cannot
  write outside ``OUT/DEVICE``.

Legacy-SCP devices have no listing: the far ``scp -f`` expands the glob in
the device's shell, files arrive with ``scp -p`` (times kept) and ``since`` is
applied locally; globs are allowed in the last part of the path only there.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from conduit.client.client import Client
from conduit.client.common import LocalFault, hash_file
from conduit.client.errors import ClientError, RemoteMismatch, describe
from conduit.client.inventory import Device
from conduit.client.job import Job, fill
from conduit.names import name_problem

if TYPE_CHECKING:
    from conduit.client.fleet import DeviceResult

_FAULTS = (asyncssh.Error, OSError, TimeoutError)
ROTATED = ".[0-9]*"
"""Appended to a pattern for its rotated siblings (``app.log.1``, ``app.log.3.gz``)."""
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Fetched:
    """One far file, complete and hashed, waiting in the scratch folder."""

    remote: str
    path: Path
    sha256: str
    bytes: int
    mtime: float | None
    verified: bool


def scratch_folder(out: Path, device: Device) -> Path:
    return out / f".{device.name}.conduit-part"


async def fetch(
    client: Client, device: Device, job: Job, scratch: Path, verify: bool
) -> list[Fetched]:
    """Every file the job's patterns match on ``device``, downloaded into ``scratch``."""
    patterns = [fill(p, device) for p in job.sources()]
    since = job.since_epoch()
    scratch.mkdir(parents=True, exist_ok=True)
    fetched: list[Fetched] = []
    seen: set[str] = set()
    for pattern in patterns:
        if client.sftp is not None:
            found = await _sftp_fetch(
                client, device.name, pattern, job.rotations, since, scratch, verify, seen
            )
        else:
            found = await _scp_fetch(
                client, device.name, pattern, job.rotations, since, scratch, verify, seen
            )
        fetched.extend(found)
    return fetched


async def _sftp_match(client: Client, who: str, pattern: str, required: bool) -> list[str]:
    assert client.sftp is not None
    try:
        if not GLOB_CHARS & set(pattern):
            await client.sftp.stat(pattern)
            return [pattern]
        return sorted(str(m) for m in await client.sftp.glob(pattern))
    except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
        if required:
            raise ClientError(f"{who}: {pattern}: no file matches", retryable=False) from None
        return []
    except _FAULTS as exc:
        raise ClientError(describe(exc, f"{who}: {pattern}")) from exc


async def _sftp_fetch(
    client: Client,
    who: str,
    pattern: str,
    rotations: bool,
    since: float | None,
    scratch: Path,
    verify: bool,
    seen: set[str],
) -> list[Fetched]:
    assert client.sftp is not None
    matches = await _sftp_match(client, who, pattern, True)
    if rotations:
        for match in list(matches):
            matches += await _sftp_match(client, who, match + ROTATED, False)
    found = []
    for remote in matches:
        if remote in seen:
            continue
        try:
            attrs = await client.sftp.stat(remote)
        except _FAULTS as exc:
            raise ClientError(describe(exc, f"{who}: {remote}")) from exc
        if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
            if remote == pattern:  # named, not globbed: say why nothing came
                raise ClientError(
                    f"{who}: {remote}: not a regular file (name files or a glob of them)",
                    retryable=False,
                )
            continue  # a glob's folders are not pulled
        if since is not None and (attrs.mtime or 0) < since:
            continue
        seen.add(remote)
        local = scratch / f"f{len(seen):06d}"
        [got] = await client.get(remote, local, preserve=True, verify=verify)
        found.append(Fetched(remote, local, got.sha256, got.bytes, attrs.mtime, got.verified))
    return found


async def _scp_fetch(
    client: Client,
    who: str,
    pattern: str,
    rotations: bool,
    since: float | None,
    scratch: Path,
    verify: bool,
    seen: set[str],
) -> list[Fetched]:
    conn = client.conn
    assert conn is not None
    folder = posixpath.dirname(pattern)
    if GLOB_CHARS & set(folder):
        raise ClientError(
            f"{who}: {pattern}: a legacy-SCP device takes a glob in the file name only"
        )
    landing = scratch / f"scp{len(os.listdir(scratch)):04d}"
    landing.mkdir()
    wanted = [(pattern, True)] + ([(pattern + ROTATED, False)] if rotations else [])
    for far, required in wanted:
        try:
            await asyncssh.scp((conn, far), str(landing), preserve=True)
        except (asyncssh.SFTPError, asyncssh.Error) as exc:
            if required:
                raise ClientError(f"{who}: {pattern}: no file matches ({exc})") from None
        except OSError as exc:
            raise ClientError(describe(LocalFault.of(exc), str(landing))) from exc
    found = []
    for entry in sorted(landing.iterdir()):
        remote = posixpath.join(folder, entry.name)
        if remote in seen or not entry.is_file():
            continue
        stat = entry.stat()
        if since is not None and stat.st_mtime < since:
            continue
        seen.add(remote)
        digest, count = hash_file(entry)
        sha256 = digest.hexdigest()
        verified = False
        if verify and client.remote_hash == "sha256sum":
            far = await client.sha256(remote)
            if far != sha256:
                raise RemoteMismatch(
                    f"{who}: {remote}: the far file hashes to {far[:16]}..., "
                    f"received {sha256[:16]}...: not kept"
                )
            verified = True
        found.append(Fetched(remote, entry, sha256, count, stat.st_mtime, verified))
    return found


def local_target(out: Path, device: Device, remote: str) -> Path:
    """``OUT/DEVICE/far/path``: every part checked, nothing outside ``OUT/DEVICE``."""
    parts = [p for p in remote.split("/") if p not in ("", ".")]
    for part in parts:
        problem = name_problem(part)
        if problem or part == "..":
            raise ClientError(
                f"{device.name}: refusing the far name {remote!r}: {problem or 'parent folder'}"
            )
    if not parts:
        raise ClientError(f"{device.name}: {remote!r} names no file")
    return out.joinpath(device.name, *parts)


def place(item: Fetched, target: Path) -> tuple[Path, str]:
    """Give ``item`` its final name without overwriting anything: ``(path, kept)`` where
    ``kept`` is ``new`` (the name was free), ``same`` (it already held these bytes) or
    ``beside`` (it held other bytes: the new file is ``NAME~SHA8`` beside it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    candidates = [(target, "new"), (target.with_name(f"{target.name}~{item.sha256[:8]}"), "beside")]
    for path, kept in candidates:
        try:
            os.link(item.path, path)  # fails if the name exists: never replaces
        except FileExistsError:
            if path.is_file() and hash_file(path)[0].hexdigest() == item.sha256:
                return path, "same" if kept == "new" else "beside"
            continue
        return path, kept
    raise ClientError(f"{target}: and {candidates[1][0].name} hold other bytes: not overwritten")


async def pull_device(
    client: Client, device: Device, job: Job, out: Path, result: DeviceResult
) -> None:
    """One attempt at one device; the scratch folder never outlives it."""
    scratch = scratch_folder(out, device)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        fetched = await fetch(client, device, job, scratch, job.verify)
        # Every name is checked before any file gets one: a device with one hostile
        # name gets nothing placed, not half of its files.
        targets = [local_target(out, device, item.remote) for item in fetched]
        files: list[dict[str, Any]] = []
        for item, target in zip(fetched, targets, strict=True):
            path, kept = await asyncio.to_thread(place, item, target)
            files.append(_entry(item, path, kept))
    except OSError as exc:
        raise ClientError(describe(LocalFault.of(exc), str(out))) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.files = files
    result.bytes = sum(f["bytes"] for f in files)
    result.destination = [f["local"] for f in files]
    result.sha256 = combined([f["sha256"] for f in files])
    result.verified = bool(files) and all(f["verified"] for f in files)


def _entry(item: Fetched, path: Path, kept: str) -> dict[str, Any]:
    return {
        "remote": item.remote,
        "local": str(path),
        "sha256": item.sha256,
        "bytes": item.bytes,
        "mtime": item.mtime,
        "verified": item.verified,
        "kept": kept,
    }


def combined(digests: list[str]) -> str | None:
    """The device's one hash: the file's own, or SHA-256 of the files' hashes in order."""
    if not digests:
        return None
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()
