"""The gateway's half of the quarantine: commits out of it, and its loop.

:mod:`conduit.inspect.quarantine` keeps the bytes and the rows;
:mod:`.inbound` puts an upload with obligations there instead of its backend
and journals what the checks said (``file.quarantined``). :class:`Keeper`
commits an item under its final name (``file.commit``: a write-ahead intent,
then the bytes copied through the target's backend, hashed again on the way,
then the outcome) when nothing is left to wait for: at once when no approval
is required, or when an approval arrives.

The CLI never writes the journal. ``conduit approve`` leaves a signed request
on the item's row; the keeper's loop (every :data:`POLL` seconds, and at
start-up) verifies it against the policy in force, journals it
(``quarantine.decision``) and only then carries it out, so a journal that
cannot take the decision leaves the request waiting for a later tick; it also rejects items whose
evidence did not arrive within ``signature_grace``, expires items nobody
approved within ``approval_expiry`` and drops evidence no waiting file needs
(``quarantine.expire``). Every record names the item (``quarantine``):
upload -> checks -> decision -> commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Protocol

from conduit.audit import faults
from conduit.audit.events import EventOutcome, EventType
from conduit.config.model import Obligation, Op
from conduit.errors import Fault, StorageError
from conduit.gateway.context import Site
from conduit.gateway.settle import _sha256
from conduit.inspect import approval
from conduit.inspect.items import Item, ItemState
from conduit.inspect.quarantine import Quarantine
from conduit.names import DEVICES
from conduit.policy import Request
from conduit.storage.base import Backend, RelPath

log = logging.getLogger("conduit.gateway")
POLL = 1.0
RETRY = 30.0
CHUNK = 1024 * 1024
#: approvals are decided on the host (the policy ignores the address for them)
_HOST = ip_address("127.0.0.1")


class Host(Site, Protocol):
    """What the keeper needs of the running gateway: what a session does, and
    whose keys may sign a user's decisions."""

    def keys_of(self, user: str) -> frozenset[bytes]: ...


def summary(item: Item) -> dict[str, Any]:
    """The fields every quarantine record carries."""
    where = {"device" if item.target_kind == "device" else "area": item.target_name}
    return {
        "quarantine": item.id,
        "path": item.path,
        "sha256": item.sha256,
        "bytes": item.size,
        "conduit": item.conduit,
        **where,
    }


def checks_text(item: Item) -> str:
    """``scan:passed:0.120s type:passed:0.001s``: per-check answers and durations."""
    return " ".join(f"{v['check']}:{v['state']}:{v['duration']:.3f}s" for v in item.verdicts)


def _file_sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


class Keeper:
    def __init__(self, host: Host, quarantine: Quarantine) -> None:
        self.host = host
        self.quarantine = quarantine
        self.items = quarantine.items
        self._retry: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._busy = asyncio.Lock()
        #: items being committed right now (by an upload or the loop): one at a time
        self._claimed: set[str] = set()

    def claim(self, item_id: str) -> bool:
        """Take the right to commit ``item_id``; False if someone else has it."""
        if item_id in self._claimed:
            return False
        self._claimed.add(item_id)
        return True

    def release(self, item_id: str) -> None:
        self._claimed.discard(item_id)

    @property
    def enforceable(self) -> frozenset[Obligation]:
        return self.quarantine.checks.enforceable

    # -- the journal ---------------------------------------------------------------------

    async def record(self, type: str, outcome: str, *, durable: bool = True, **fields: Any) -> None:
        await self.host.recorder.record(type, outcome, durable=durable, hold=not durable, **fields)

    async def quarantined(self, item: Item, principal: dict[str, Any]) -> None:
        """``file.quarantined``: what the checks said about a new item."""
        outcome = EventOutcome.FAILED if item.state is ItemState.REJECTED else EventOutcome.SUCCESS
        await self.record(
            EventType.FILE_QUARANTINED,
            outcome,
            durable=False,
            state=str(item.state),
            reason=item.reason,
            checks=checks_text(item),
            transfer=item.transfer,
            **principal,
            **summary(item),
        )

    # -- committing ------------------------------------------------------------------------

    def locate(self, item: Item) -> tuple[Backend, RelPath]:
        parts = tuple(p for p in item.path.split("/") if p)
        if item.target_kind == "device":
            backend = self.host.devices.get(item.target_name)
            rel = parts[2:] if parts[:1] == (DEVICES,) else ()
        else:
            backend = self.host.areas.get(item.target_name)
            rel = parts[1:]
        if backend is None or not rel:
            raise StorageError(Fault.NOT_FOUND, detail=f"no area or device serves {item.path}")
        return backend, rel

    async def commit(self, item: Item, **why: Any) -> None:
        """Put an approved item under its final name, through its backend."""
        fields = {"principal": item.uploader, "source": item.source, **summary(item), **why}
        intent = uuid.uuid4().hex[:16]
        backend, rel = self.locate(item)
        await self.record(EventType.FILE_COMMIT, EventOutcome.INTENT, intent=intent, **fields)
        await faults.hold("after-intent", EventType.FILE_COMMIT)
        try:
            await self._copy(item, backend, rel)
        except StorageError as exc:
            await self.record(
                EventType.FILE_COMMIT,
                EventOutcome.FAILED,
                durable=False,
                intent=intent,
                error=exc.detail,
                **fields,
            )
            raise
        await faults.hold("after-effect", EventType.FILE_COMMIT)
        self.items.move(item.id, ItemState.COMMITTED, expect=(ItemState.APPROVED,))
        await self.record(
            EventType.FILE_COMMIT, EventOutcome.SUCCESS, durable=False, intent=intent, **fields
        )

    async def _copy(self, item: Item, backend: Backend, rel: RelPath) -> None:
        """The quarantined bytes into the backend's own atomic upload, hashed
        again: bytes changed in quarantine since the checks are never committed.
        A local area on the quarantine's file system takes the file by rename."""
        source = self.quarantine.data(item.id)
        if not source.exists() and await _sha256(backend, rel, item.size) == item.sha256:
            return  # moved into place before a crash, its row not yet updated
        adopt = getattr(backend, "adopt", None)
        if adopt is not None:
            if await asyncio.to_thread(_file_sha256, source) != item.sha256:
                raise StorageError(
                    Fault.FAILURE, detail="quarantined bytes changed since they were checked"
                )
            try:
                await adopt(rel, source)
                return
            except StorageError as exc:
                if exc.fault is not Fault.UNSUPPORTED:
                    raise
        digest = hashlib.sha256()
        handle = await backend.open_write(rel)
        fd = -1
        try:
            fd = os.open(self.quarantine.data(item.id), os.O_RDONLY | os.O_CLOEXEC)
            offset = 0
            while chunk := await asyncio.to_thread(os.pread, fd, CHUNK, offset):
                await handle.write(offset, chunk)
                digest.update(chunk)
                offset += len(chunk)
            if digest.hexdigest() != item.sha256 or offset != item.size:
                raise StorageError(
                    Fault.FAILURE, detail="quarantined bytes changed since they were checked"
                )
            await handle.commit()
        except OSError as exc:
            await handle.abort()
            raise StorageError(Fault.FAILURE, detail=f"quarantine: {exc.strerror}") from None
        except BaseException:
            await handle.abort()
            raise
        finally:
            if fd >= 0:
                os.close(fd)

    def kept(self, rec: dict[str, Any]) -> bool:
        """Recovery: is the upload this intent names kept in quarantine?"""
        q = self.quarantine
        if rec.get("quarantine"):
            item = self.items.get(str(rec["quarantine"]))
            return item is not None and item.sha256 == rec.get("sha256")
        rows = q.db.query(
            "SELECT sha256 FROM quarantine_evidence WHERE id = ?", (str(rec.get("evidence")),)
        )
        return bool(rows) and rows[0]["sha256"] == rec.get("sha256")

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        removed = self.quarantine.sweep()
        if removed:
            log.warning("quarantine: removed %d incomplete file(s) left by a crash", removed)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("quarantine: tick failed")
            await asyncio.sleep(POLL)

    async def tick(self, now: float | None = None) -> None:
        """Carry out requests, commit approved items, expire what waited too long."""
        async with self._busy:
            now = time.time() if now is None else now
            for item in self.items.requested():
                await self._carry_out(item)
            for item in self.items.find(ItemState.APPROVED):
                if self._retry.get(item.id, 0.0) > now or not self.claim(item.id):
                    continue  # waiting to retry, or its upload is committing it now
                try:
                    await self.commit(item)
                except StorageError as exc:
                    self._retry[item.id] = now + RETRY
                    log.error("quarantine: %s not committed: %s", item.id, exc.detail)
                finally:
                    self.release(item.id)
            await self._expire(now)

    async def _expire(self, now: float) -> None:
        for item in self.items.find(ItemState.PENDING, ItemState.HELD):
            if item.deadline is None or item.deadline > now:
                continue
            if item.state is ItemState.PENDING:
                to, reason = ItemState.REJECTED, f"{item.reason} (grace time passed)"
            else:
                to, reason = ItemState.EXPIRED, "approval expired: nobody approved it in time"
            if not self.items.move(item.id, to, expect=(item.state,), reason=reason):
                continue  # decided meanwhile
            try:
                await self.record(
                    EventType.QUARANTINE_EXPIRE,
                    EventOutcome.SUCCESS,
                    principal=item.uploader,
                    state=str(to),
                    reason=reason,
                    **summary(item),
                )
            except Exception:
                # not journalled, so not done: it expires at a later tick
                self.items.move(item.id, item.state, expect=(to,), reason=item.reason)
                raise

        for row in self.quarantine.stale_evidence(now):
            await self.record(
                EventType.QUARANTINE_EXPIRE,
                EventOutcome.SUCCESS,
                principal=row["uploader"],
                evidence=row["id"],
                path=row["path"],
                sha256=row["sha256"],
                reason="evidence no waiting file needs (signature_grace passed)",
            )
            self.quarantine.drop_evidence(row["id"])  # recorded first, as every removal

    async def _carry_out(self, item: Item) -> None:
        request = item.request or {}
        action = str(request.get("action", ""))
        fields = {"principal": request.get("by"), "action": action, **summary(item)}
        # The record comes first, the state change second: a journal that
        # cannot take the decision leaves the request on the row, to be
        # carried out (and recorded) at a later tick, never an approval in
        # force that the journal does not show.
        try:
            changes = self._allowed(item, request)
        except approval.ApprovalError as exc:
            await self.record(
                EventType.QUARANTINE_DECISION, EventOutcome.DENIED, reason=str(exc), **fields
            )
            self.items.clear_request(item.id)
            return
        to = changes.pop("state")
        decision = {k: request.get(k) for k in ("action", "by", "at", "reason", "signature")}
        await self.record(
            EventType.QUARANTINE_DECISION,
            EventOutcome.SUCCESS,
            reason=request.get("reason"),
            signature=request.get("signature"),
            state=str(to),
            **fields,
        )
        self.items.clear_request(item.id, state=to, decision=decision, **changes)
        if to is ItemState.PURGED:
            self.quarantine.data(item.id).unlink(missing_ok=True)

    def _allowed(self, item: Item, request: dict[str, Any]) -> dict[str, Any]:
        """Check a request against the policy in force; the changes it makes."""
        action, by = request.get("action"), str(request.get("by"))
        if action == "purge":
            if item.state not in (ItemState.REJECTED, ItemState.EXPIRED, ItemState.COMMITTED):
                raise approval.ApprovalError(f"{item.id} is {item.state}: reject it first")
            return {"state": ItemState.PURGED}
        verdict = "reject" if action == "reject" else "approve"
        allowed = (ItemState.HELD,) if action != "release" else (ItemState.HELD, ItemState.EXPIRED)
        if item.state not in allowed:
            raise approval.ApprovalError(f"{item.id} is {item.state}, not waiting for approval")
        if by == item.uploader:
            raise approval.ApprovalError(f"{by} uploaded {item.id} and cannot decide on it")
        decision = self.host.policy.decide(Request(by, _HOST, Op.APPROVE, item.path))
        if not decision.allowed:
            raise approval.ApprovalError(f"{by} may not approve {item.path}: {decision.reason}")
        text = approval.message(item.id, item.sha256, verdict)
        keys = {by: self.host.keys_of(by)}
        approval.verify(str(request.get("signature", "")), text, by, keys)
        if verdict == "reject":
            why = f"rejected by {by}: {request.get('reason')}"
            return {"state": ItemState.REJECTED, "reason": why}
        return {"state": ItemState.APPROVED, "reason": f"approved by {by}"}
