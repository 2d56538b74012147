"""Start-up recovery: what a crash left open, settled from what is on disk.

A killed gateway can leave three kinds of open ends in the journal:

* a transfer ``started`` with no end and no commit intent: nothing was
  committed, so it gets a ``failed`` record with ``error = "gateway stopped
  during transfer"`` and ``bytes``: for an upload what had reached its temp
  file (read before the start-up sweep removes it), for a download 0;
* an ``intent`` with no outcome: the effect may or may not have happened.
  :func:`settle` asks the storage: an upload whose file is at its path with
  the intended SHA-256 and size was committed (``success``), otherwise it was
  not (``failed``); a delete whose name is gone happened; and so on (the
  gateway's :mod:`conduit.gateway.settle` asks the backends). Nothing
  live is ever called failed. If the storage cannot answer (a device is
  unreachable), an ``audit.alert`` names the intent and says so;
* a ``session.start`` with no ``session.end``: the session gets its end,
  ``failed``, with the reason.

Each settled record carries the intent's fields (who, what) and a ``note``
saying it was settled at recovery and from what.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from conduit.audit.events import RESERVED, Record, Value
from conduit.audit.journal import Item

log = logging.getLogger("conduit.audit")
STOPPED = "gateway stopped during transfer"

#: Turns open intent records into their outcome records (given the storage).
Settle = Callable[[list[Record]], Awaitable[list[Item]]]


def carry(record: Record, drop: tuple[str, ...] = ()) -> dict[str, Value]:
    return {
        k: v for k, v in record.items() if k not in RESERVED and k not in ("error", "note", *drop)
    }


def deferred(rec: Record) -> bool:
    """Whether ``rec`` is settled against the storage rather than from the journal alone:
    an intent, or an upload whose temp file tells how many bytes had arrived."""
    return rec["outcome"] == "intent" or (rec["type"] == "file.upload" and bool(rec.get("temp")))


def crash_items(
    open_: Mapping[str, Record], sessions: Mapping[str, Record], defer: bool = True
) -> list[Item]:
    """Records for transfers without a commit intent and sessions without an end
    (``defer``: leave what :func:`deferred` names to :func:`settle`)."""
    items: list[Item] = []
    for key, rec in open_.items():
        if rec["outcome"] != "started" or (defer and deferred(rec)):
            continue
        fields = carry(rec, ("bytes", "temp"))
        fields.update(transfer=key, bytes=0, error=STOPPED)
        if rec["type"] == "file.upload":
            fields["note"] = "not committed: no commit intent was journalled"
        else:
            fields["note"] = "bytes sent before the stop are not known"
        items.append((str(rec["type"]), "failed", fields, None))
    for sid, rec in sessions.items():
        fields = carry(rec, ("auth_method", "client_version", "key_fingerprint"))
        fields.update(session=sid, error="gateway stopped during the session")
        items.append(("session.end", "failed", fields, None))
    return items


async def settled_items(open_: Mapping[str, Record], settle: Settle | None) -> list[Item]:
    """Records for what :func:`deferred` names among ``open_``: settled against the
    storage by ``settle``, or, without one, an alert per intent and the crash records."""
    todo = {k: r for k, r in open_.items() if deferred(r)}
    if settle is not None:
        return await settle(list(todo.values())) if todo else []
    reason = "intent left without outcome at close (no storage to settle it against)"
    alerts: list[Item] = [
        ("audit.alert", "failed", {**carry(r), "reason": reason}, None)
        for r in todo.values()
        if r["outcome"] == "intent"
    ]
    return alerts + crash_items(todo, {}, defer=False)
