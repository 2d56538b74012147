"""Settling open intents against the storage at start-up (the gateway's half of
:mod:`conduit.audit.recovery`): the journal says what was intended, the
backends say what happened. Here because it needs both the journal's records
and the gateway's backends, and the audit package knows no storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping

from conduit.audit.events import EventType, Record
from conduit.audit.journal import Item
from conduit.audit.recovery import STOPPED, Settle, carry
from conduit.errors import Fault, StorageError
from conduit.storage.base import Backend, RelPath

log = logging.getLogger("conduit.audit")
READ_CHUNK = 1024 * 1024


#: Whether an upload into quarantine (its intent names the item) is kept there.
Kept = Callable[[Record], bool]


def storage_settler(
    areas: Callable[[], Mapping[str, Backend]],
    devices: Callable[[], Mapping[str, Backend]],
    kept: Kept | None = None,
) -> Settle:
    """A :data:`Settle` that looks at the gateway's current backends (and, for
    uploads into quarantine, at the quarantine: ``kept``)."""

    async def run(intents: list[Record]) -> list[Item]:
        out = []
        for rec in intents:
            if kept is not None and rec["outcome"] == "intent" and _quarantined(rec):
                out.append(_settle_kept(rec, kept(rec)))
            else:
                out.append(await settle(rec, areas(), devices()))
        return out

    return run


def _quarantined(rec: Record) -> bool:
    return rec["type"] == EventType.FILE_UPLOAD and bool(
        rec.get("quarantine") or rec.get("evidence")
    )


def _settle_kept(rec: Record, kept: bool) -> Item:
    """An upload into quarantine: done if its item (or evidence) row and bytes are there."""
    fields = carry(rec)
    if kept:
        fields["note"] = "settled at recovery: kept in quarantine with the intended SHA-256"
        return (EventType.FILE_UPLOAD, "success", fields, None)
    fields["note"] = "settled at recovery: not in quarantine (the checks never answered)"
    fields["error"] = STOPPED
    return (EventType.FILE_UPLOAD, "failed", fields, None)


def _locate(
    rec: Record, path: str, areas: Mapping[str, Backend], devices: Mapping[str, Backend]
) -> tuple[Backend, RelPath]:
    parts = tuple(p for p in path.split("/") if p)
    device = rec.get("device")
    if isinstance(device, str) and device in devices:
        return devices[device], parts[2:]
    area = rec.get("area")
    if isinstance(area, str) and area in areas:
        return areas[area], parts[1:]
    raise StorageError(Fault.NOT_FOUND, detail=f"no area or device serves {path} any more")


async def _exists(backend: Backend, rel: RelPath) -> bool:
    try:
        await backend.stat(rel)
    except StorageError as exc:
        if exc.fault in (Fault.NOT_FOUND, Fault.NOT_A_DIRECTORY):
            return False
        raise
    return True


async def _sha256(backend: Backend, rel: RelPath, size: int) -> str | None:
    """SHA-256 of the file at ``rel`` if it has ``size`` bytes, else None."""
    try:
        st = await backend.stat(rel)
    except StorageError as exc:
        if exc.fault in (Fault.NOT_FOUND, Fault.NOT_A_DIRECTORY):
            return None
        raise
    if not st.is_file or st.size != size:
        return None
    handle = await backend.open_read(rel)
    h, offset = hashlib.sha256(), 0
    try:
        while offset < size:
            data = await handle.read(offset, min(READ_CHUNK, size - offset))
            if not data:
                return None
            h.update(data)
            offset += len(data)
    finally:
        await handle.close()
    return h.hexdigest()


async def _happened(
    rec: Record,
    backend: Backend,
    rel: RelPath,
    areas: Mapping[str, Backend],
    devices: Mapping[str, Backend],
) -> tuple[bool, str]:
    """Whether the intended effect is what the storage shows, and why we think so."""
    type_ = rec["type"]
    if type_ in (EventType.FILE_UPLOAD, EventType.FILE_COMMIT):
        found = await _sha256(backend, rel, int(rec.get("bytes") or 0))
        if found == rec.get("sha256"):
            return True, "committed: the file is on disk with the intended SHA-256 and size"
        return False, "not committed: no file with the intended SHA-256 and size is there"
    if type_ == EventType.FILE_DELETE:
        if await _exists(backend, rel):
            return False, "not deleted: the file is still there"
        return True, "deleted: the name is gone"
    if type_ == EventType.DIR_DELETE:
        if await _exists(backend, rel):
            return False, "not removed: the folder is still there"
        return True, "removed: the folder is gone"
    if type_ == EventType.DIR_CREATE:
        try:
            made = (await backend.stat(rel)).is_dir
        except StorageError:
            made = False
        return (True, "created: the folder is there") if made else (False, "not created")
    if type_ == EventType.FILE_RENAME:
        old_backend, old_rel = _locate(rec, str(rec.get("old_path")), areas, devices)
        moved = not await _exists(old_backend, old_rel) and await _exists(backend, rel)
        if moved:
            return True, "renamed: the old name is gone and the new one is there"
        return False, "not renamed: the old name is still there or the new one is missing"
    if type_ == EventType.FILE_TIMES:
        try:
            st = await backend.stat(rel)
        except StorageError:
            return False, "not set: the file is gone"
        if int(st.mtime) == int(float(rec.get("mtime") or 0)):
            return True, "set: the file has the intended modification time"
        return False, "not set: the file has another modification time"
    raise StorageError(Fault.UNSUPPORTED, detail=f"no recovery check for {type_}")


async def _arrived(
    rec: Record, areas: Mapping[str, Backend], devices: Mapping[str, Backend]
) -> Item:
    """The ``failed`` record of an upload cut off before its commit intent, with the
    bytes that had reached its temp file (which the start-up sweep removes)."""
    fields = carry(rec, ("temp",))
    size = 0
    with contextlib.suppress(StorageError, OSError):
        backend, rel = _locate(rec, str(rec.get("path")), areas, devices)
        temp_size = getattr(backend, "temp_size", None)  # local areas; devices: unknown
        if temp_size is not None:
            size = await temp_size((*rel[:-1], str(rec["temp"])))
    fields.update(bytes=size, error=STOPPED)
    fields["note"] = f"not committed: {size} byte(s) had arrived (no commit intent)"
    return (EventType.FILE_UPLOAD, "failed", fields, None)


async def settle(rec: Record, areas: Mapping[str, Backend], devices: Mapping[str, Backend]) -> Item:
    """The outcome record for one open intent, from what the storage shows now."""
    if rec["outcome"] == "started":
        return await _arrived(rec, areas, devices)
    key = str(rec.get("transfer") or rec.get("intent"))
    fields = carry(rec)
    try:
        backend, rel = _locate(rec, str(rec.get("path")), areas, devices)
        done, why = await _happened(rec, backend, rel, areas, devices)
    except (StorageError, OSError) as exc:
        detail = getattr(exc, "detail", None) or str(exc)
        log.error("recovery: intent %s on %s not settled: %s", key, rec.get("path"), detail)
        reason = f"outcome of {rec['type']} intent {key} unknown at recovery: {detail}"
        return (EventType.AUDIT_ALERT, "failed", {**fields, "reason": reason}, None)
    fields["note"] = f"settled at recovery: {why}"
    if not done:
        fields["error"] = STOPPED if rec["type"] == EventType.FILE_UPLOAD else "gateway stopped"
    return (str(rec["type"]), "success" if done else "failed", fields, None)
