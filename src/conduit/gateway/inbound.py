"""Transfers through a conduit with obligations: uploads into quarantine,
downloads of released or freshly scanned bytes only (the session's side; :mod:`.quarantine`'s
:class:`~conduit.gateway.quarantine.Keeper` commits and decides).

:func:`open_quarantined` gives :class:`~conduit.gateway.operations.Operations`
an :class:`~conduit.transfer.Upload` whose handle keeps the bytes in
quarantine (:class:`Inline`; evidence: :class:`EvidenceInline`), feeding the
stream checks through the pipeline's ``observe`` hook. :func:`clear_for_read` lets a
download through such a conduit out only if its exact bytes were committed
from quarantine having met every obligation (:func:`vouch`), or, where the
conduit says ``on_read = "scan"``, once they pass its scan now.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import uuid
from typing import Any

from conduit.audit.events import EventOutcome, EventType
from conduit.config.model import Obligation, Op
from conduit.errors import Fault, StorageError
from conduit.gateway.quarantine import CHUNK, Keeper, summary
from conduit.inspect import readscan
from conduit.inspect.items import Item, ItemState
from conduit.inspect.plan import evidence_kind
from conduit.inspect.quarantine import Arrival, EvidenceReceiving, Receiving
from conduit.storage.base import ReadHandle
from conduit.transfer import Upload
from conduit.transfer.pipeline import Check


class _Kept:
    """A write handle whose bytes go to quarantine (``receiving``), not to a
    backend: what the two kinds of upload share."""

    atomic = True
    device_sha256: str | None = None

    def __init__(
        self, keeper: Keeper, receiving: Receiving | EvidenceReceiving, principal: dict[str, Any]
    ) -> None:
        self.keeper = keeper
        self.receiving = receiving
        self.principal = principal
        self.temp = None

    async def write(self, offset: int, data: bytes) -> None:
        await self.receiving.write(offset, data)

    async def abort(self) -> None:
        await self.receiving.abort()


class Inline(_Kept):
    """An upload into quarantine as the pipeline sees it: a write handle whose
    commit keeps the bytes, journals the checks and, when nothing is left to
    wait for, commits the file under its final name before the client hears."""

    receiving: Receiving

    async def commit(self) -> None:
        self.keeper.claim(self.receiving.id)  # a new id: the keeper's loop must wait
        try:
            await self._commit()
        finally:
            self.keeper.release(self.receiving.id)

    async def _commit(self) -> None:
        try:
            await self.receiving.commit()
        finally:
            if self.receiving.item is not None:
                await self.keeper.quarantined(self.receiving.item, self.principal)
        item = self.receiving.item
        assert item is not None
        for old in self.receiving.superseded:
            await self.keeper.record(
                EventType.QUARANTINE_EXPIRE,
                EventOutcome.SUCCESS,
                durable=False,
                state=str(ItemState.REJECTED),
                reason=f"superseded by {item.id}",
                superseded=old,
                **self.principal,
                **summary(item),
            )
        if item.state is ItemState.APPROVED:
            try:
                await self.keeper.commit(item, reason="every check passed; no approval required")
            except StorageError as exc:
                # The client hears of the failure: the file must not appear later.
                self.keeper.items.move(
                    item.id,
                    ItemState.REJECTED,
                    expect=(ItemState.APPROVED,),
                    reason=f"commit failed: {exc.reason}",
                )
                raise


class EvidenceInline(_Kept):
    """A signature or manifest upload: kept with the files it speaks for, which
    are then judged again (a pending file may now pass, or fail)."""

    receiving: EvidenceReceiving

    async def commit(self) -> None:
        r = self.receiving
        await r.commit()
        await self.keeper.record(
            EventType.FILE_EVIDENCE,
            EventOutcome.SUCCESS,
            durable=False,
            evidence=r.id,
            kind=r.kind,
            path=r.arrival.path,
            sha256=r.sha256,
            bytes=r.size,
            transfer=r.arrival.transfer,
            **self.principal,
        )
        for item in await self.keeper.quarantine.rejudge(posixpath.dirname(r.arrival.path)):
            await self.keeper.quarantined(item, self.principal)
            if item.state is ItemState.APPROVED and self.keeper.claim(item.id):
                try:
                    with contextlib.suppress(StorageError):  # the loop retries it
                        await self.keeper.commit(item, reason="evidence arrived; checks passed")
                finally:
                    self.keeper.release(item.id)


async def open_quarantined(
    ops: Any, keeper: Keeper, path: Any, decision: Any, check: Check | None = None
) -> Upload:
    """An upload through a conduit with obligations (``ops``: the session's
    :class:`~conduit.gateway.operations.Operations`): into quarantine, never
    near its final name; evidence is size-limited and kept for its folder."""
    transfer = uuid.uuid4().hex[:16]
    conduit = (decision.conduit or "").removeprefix("conduits[").removesuffix("]")
    target = ops._target(path)
    arrival = Arrival(
        uploader=ops.session.user,
        source=str(ops.session.source),
        conduit=conduit,
        path=path.text,
        target_kind="device" if "device" in target else "area",
        target_name=str(target.get("device") or target.get("area")),
        needs_approval=Obligation.APPROVAL in decision.obligations,
        transfer=transfer,
    )
    principal = {"principal": ops.session.user, "source": str(ops.session.source)}
    limit = decision.max_size
    handle: Inline | EvidenceInline
    if evidence_kind(path.name) is not None:
        handle = EvidenceInline(keeper, keeper.quarantine.receive_evidence(arrival), principal)
        cap = int(keeper.quarantine.config.max_evidence_size)
        limit = cap if limit is None else min(limit, cap)
        key = {"evidence": handle.receiving.id}
    else:
        handle = Inline(keeper, keeper.quarantine.receive(arrival), principal)
        key = {"quarantine": handle.receiving.id}
    receiving = handle.receiving
    ops.traffic.transfers_open += 1
    try:
        await ops.record(
            EventType.FILE_UPLOAD,
            EventOutcome.STARTED,
            durable=False,
            transfer=transfer,
            path=path.text,
            rule=decision.rule,
            **key,
            **target,
        )
    except Exception:
        ops.traffic.transfers_open -= 1
        await handle.abort()
        raise

    async def intend(sha256: str, size: int, times: tuple[float, float] | None) -> None:
        receiving.whole(sha256, size)
        await ops.record(
            EventType.FILE_UPLOAD,
            EventOutcome.INTENT,
            transfer=transfer,
            path=path.text,
            sha256=sha256,
            bytes=size,
            rule=decision.rule,
            **key,
            **target,
        )

    upload = Upload(
        handle,
        transfer=transfer,
        path=path.text,
        max_size=limit,
        report=ops._reporter(EventType.FILE_UPLOAD, path, decision, **key),
        intend=intend,
        check=check,
        reorder=ops.reorder,
        observe=receiving.feed if isinstance(receiving, Receiving) else None,
    )
    upload.quarantined = True  # type: ignore[attr-defined]
    ops.traffic.transfers[transfer] = (Op.WRITE, path.text, upload)
    return upload


async def clear_for_read(
    keeper: Keeper, path: str, handle: ReadHandle, decision: Any
) -> dict[str, Any]:
    """A download through a conduit with obligations, before its first byte:
    scanned now when the conduit says ``on_read = "scan"``, otherwise served
    only if released (:func:`vouch`). The fields for its ``started`` record."""
    conduit = (decision.conduit or "").removeprefix("conduits[").removesuffix("]")
    checks = keeper.quarantine.checks
    on_read = getattr(checks, "on_read", None)
    if on_read is None or on_read(conduit) != "scan":
        return await vouch(keeper, path, handle, decision.obligations)
    cache = readscan.VerdictCache(keeper.quarantine.db, keeper.quarantine.config.scan.verdict_cache)
    try:
        cleared = await readscan.clear(handle.read, handle.size, checks.streams(conduit), cache)
    except readscan.Refused as exc:
        v = exc.verdict
        raise StorageError(
            Fault.FORBIDDEN,
            v.reason,
            f"download refused: {v.detail or v.reason}; sha256 {exc.sha256} of {path}; "
            f"{v.check}:{v.state}:{v.duration:.3f}s",
        ) from None
    return cleared.fields()


async def vouch(
    keeper: Keeper, path: str, handle: ReadHandle, obligations: frozenset[Obligation]
) -> dict[str, Any]:
    """Serve a download through a conduit with obligations only if these exact
    bytes (hashed here, through the handle that will serve them) were committed
    from quarantine at this path having met every one of them."""
    digest, offset = hashlib.sha256(), 0
    while offset < handle.size:
        chunk = await handle.read(offset, min(CHUNK, handle.size - offset))
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    sha256 = digest.hexdigest()
    for item in keeper.items.find(ItemState.COMMITTED, path=path):
        if item.sha256 == sha256 and offset == item.size and _met(item, obligations):
            return {"quarantine": item.id, "sha256_vouched": sha256}
    required = ", ".join(sorted(obligations))
    raise StorageError(
        Fault.FORBIDDEN,
        f"not released: these bytes have not passed {required}",
        f"download refused: sha256 {sha256} of {path} was never committed with {required}",
    )


def _met(item: Item, obligations: frozenset[Obligation]) -> bool:
    passed = {v["check"] for v in item.verdicts if v["state"] == "passed"}
    for obligation in obligations:
        if obligation is Obligation.APPROVAL:
            if not (item.needs_approval and item.decision and item.decision.get("by")):
                return False
        elif str(obligation) not in passed:
            return False
    return True
