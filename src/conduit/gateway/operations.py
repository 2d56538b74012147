"""File operations in virtual-root terms, shared by the SFTP and SCP servers.

Every request, whichever protocol brought it, comes through one
:class:`Operations` object per SSH session: the path is normalised in the
virtual root, the policy decides, the right backend carries it out, the
transfer pipeline hashes and commits, and the outcome is recorded. The
protocol servers only translate wire messages to these calls and errors back.

Write-ahead: every effect on storage (an upload's commit, delete, rename,
mkdir, rmdir, set times) first writes a durable ``intent`` record naming who
does what; only then does the effect happen, and its ``success``/``failed``
outcome follows without an fsync of its own (it rides the next flush). No
intent record, no effect: the client gets the refusal and storage is
untouched. A download's ``started`` record is durable before its first byte
leaves. Start-up recovery settles intents whose outcome a crash lost
(:mod:`conduit.audit.recovery`).
"""

from __future__ import annotations

import secrets
import stat as stat_module
import time
from collections.abc import Awaitable, Callable
from typing import Any

from conduit.audit.events import EventOutcome, EventType
from conduit.config.model import Op
from conduit.errors import Fault, JournalUnavailable, StorageError
from conduit.gateway.context import SessionInfo, Site, Traffic
from conduit.gateway.eventlog import EventLog
from conduit.gateway.guard import moment
from conduit.gateway.inbound import clear_for_read, open_quarantined
from conduit.gateway.vfs import ROOT, BadPath, VirtualPath, resolve
from conduit.gateway.writeahead import WriteAhead
from conduit.names import DEVICES
from conduit.policy import Decision
from conduit.storage.base import Backend, Entry, ReadHandle, RelPath, Space, Stat
from conduit.transfer import Direction, Download, TransferRecord, Upload
from conduit.transfer.budget import ReorderBudget
from conduit.transfer.pipeline import Report

VIRTUAL_DIR_MODE = stat_module.S_IFDIR | 0o555

#: A change to storage, given the backend and the path below its root.
Change = Callable[[Backend, RelPath], Awaitable[None]]


def _virtual_stat() -> Stat:
    now = time.time()
    return Stat(size=0, mode=VIRTUAL_DIR_MODE, mtime=now, atime=now)


class Operations(WriteAhead):
    """One session's view of the virtual root."""

    def __init__(
        self,
        site: Site,
        session: SessionInfo,
        traffic: Traffic | None = None,
        reorder: ReorderBudget | None = None,
    ) -> None:
        self.site = site
        self.session = session
        self.traffic = traffic or Traffic()
        self.reorder = reorder  # this session's bound on upload bytes held out of order
        self._notes: dict[str, str] = {}
        # who, from where: the same in every record of the session (made once)
        self._session_fields: dict[str, Any] = {
            "principal": session.user,
            "source": str(session.source),
            "zone": session.zone,
            "session": session.id,
            "protocol": session.protocol,
        }

    # -- paths, policy and audit ------------------------------------------------

    def resolve(self, raw: bytes | str, cwd: VirtualPath = ROOT) -> VirtualPath:
        try:
            return resolve(raw, cwd)
        except BadPath as exc:
            raise StorageError(Fault.FAILURE, str(exc)) from None

    async def refuse(self, operation: str, path: str, reason: str) -> None:
        """Record a request refused before the policy could be asked (a bad name, a
        broken protocol line); ``path`` is what the client sent, cut to 1,024 characters."""
        await self.record(
            EventType.ACCESS_DENIED,
            EventOutcome.DENIED,
            operation=operation,
            path=path[:1024],
            reason=reason,
        )

    def note(self, transfer: str, text: str) -> None:
        """Something the transfer's outcome record must say (e.g. a missing final status)."""
        self._notes[transfer] = text

    async def record(
        self, type: str, outcome: str, *, durable: bool = True, hold: bool = False, **fields: Any
    ) -> None:
        """Record an event; if the journal refuses it, the operation fails (fail closed).

        ``durable=False`` is for records that must survive the gateway process
        dying, not a power loss: an upload's ``started`` and every outcome
        whose durable intent is already written. ``hold``: see :meth:`settled`.
        """
        recorder = self.site.recorder
        fields = {**self._session_fields, **fields}
        try:
            if isinstance(recorder, EventLog):  # the gateway's: the dict as it is, no copy
                await recorder.record_fields(type, outcome, fields, durable=durable, hold=hold)
            else:
                await recorder.record(type, outcome, durable=durable, hold=hold, **fields)
        except StorageError:
            raise
        except Exception as exc:
            raise JournalUnavailable(f"audit record {type}/{outcome} failed: {exc}") from exc

    def locate(self, path: VirtualPath) -> tuple[Backend, RelPath, str]:
        """The backend serving ``path``, the path below its root, and a label."""
        top = path.top
        if top == DEVICES and len(path.parts) >= 2:
            backend = self.site.devices.get(path.parts[1])
            if backend is not None:
                return backend, path.parts[2:], f"device:{path.parts[1]}"
        elif top is not None and top != DEVICES:
            backend = self.site.areas.get(top)
            if backend is not None:
                return backend, path.parts[1:], f"area:{top}"
        raise StorageError(Fault.NOT_FOUND)

    def _is_virtual_dir(self, path: VirtualPath) -> bool:
        return path.is_root or (path.parts == (DEVICES,) and bool(self.site.devices))

    def _target(self, path: VirtualPath) -> dict[str, Any]:
        """Audit fields naming where ``path`` lives."""
        top = path.top
        if top == DEVICES and len(path.parts) >= 2:
            return {"device": path.parts[1]}
        return {"area": top}

    # -- metadata -------------------------------------------------------------------

    async def space(self, path: VirtualPath) -> Space:
        """Free space where ``path`` lives; naming it needs what a stat needs."""
        await self.stat_allowed(path)
        if len(path.parts) < 1 or self._is_virtual_dir(path):
            raise StorageError(Fault.UNSUPPORTED, "no space information here")
        backend, rel, _ = self.locate(path)
        return await backend.statvfs(rel)

    async def stat(self, path: VirtualPath) -> Stat:
        if self._may_look(path):
            if self._is_virtual_dir(path):
                return _virtual_stat()
            backend, rel, _ = self.locate(path)
            return await self._unconcealed(backend.stat(rel), Op.READ, path)
        if self._may_write_into(path) or self._ask(Op.WRITE, path).allowed:
            return await self._blind_stat(path)
        await self.authorize(Op.LIST, path)
        raise StorageError(Fault.NOT_FOUND)  # not reached: list was just refused

    async def _blind_stat(self, path: VirtualPath) -> Stat:
        """Stat for a user who may write here but not look: a folder they may
        write into is a folder (no size, no times: nothing about its contents),
        and anything else answers as missing, whether it exists or not."""
        if self._may_write_into(path):
            backend, rel, _ = self.locate(path)
            if (await backend.stat(rel)).is_dir:
                now = time.time()
                return Stat(size=0, mode=stat_module.S_IFDIR | 0o755, mtime=now, atime=now)
        raise StorageError(Fault.NOT_FOUND)

    async def listdir(self, path: VirtualPath) -> list[Entry]:
        await self.authorize(Op.LIST, path)
        if path.is_root:
            names = [n for n in self.site.policy.roots(self.session.user, self.session.source)]
            return [await self._root_entry(name) for name in names if self._serves(name)]
        if path.parts == (DEVICES,):
            entries = [Entry(name, _virtual_stat()) for name in sorted(self.site.devices)]
        else:
            backend, rel, _ = self.locate(path)
            entries = await backend.listdir(rel)
        shown = self._listed(path, [entry.name for entry in entries])
        return [entry for entry, yes in zip(entries, shown, strict=True) if yes]

    def _serves(self, name: str) -> bool:
        return name in self.site.areas or (name == DEVICES and bool(self.site.devices))

    async def _root_entry(self, name: str) -> Entry:
        if name == DEVICES:
            return Entry(name, _virtual_stat())
        try:
            return Entry(name, await self.site.areas[name].stat(()))
        except StorageError:
            return Entry(name, _virtual_stat())

    async def set_times(
        self, path: VirtualPath, atime: float, mtime: float, *, upload: Upload | None = None
    ) -> None:
        """Set a file's times; ``upload``: the upload just committed there, whose
        durable commit intent already named these times (no second fsync)."""
        await self.authorize(Op.WRITE, path)
        if getattr(upload, "quarantined", False):
            return  # the file is in quarantine, not under this name: nothing to set
        backend, rel, _ = self.locate(path)
        fields = {"path": path.text, "atime": atime, "mtime": mtime, **self._target(path)}

        async def action() -> None:
            await backend.set_times(rel, atime, mtime)

        await self.effect(
            EventType.FILE_TIMES, fields, action, intent=self.covering(upload, atime, mtime)
        )

    # -- transfers ------------------------------------------------------------------

    async def open_read(self, path: VirtualPath) -> Download:
        opened = moment(self.site.policy)  # before the decision: see _readable
        decision = await self.authorize(Op.READ, path)
        backend, rel, _ = self.locate(path)
        handle = await self._unconcealed(backend.open_read(rel), Op.READ, path)
        if rel and decision.max_size is not None and handle.size > decision.max_size:
            # The conduit that allowed without a size does not take this file;
            # the one that does (if any) decides: its obligations, its rule.
            try:
                decision = await self.authorize(Op.READ, path, handle.size)
            except BaseException:
                await handle.close()
                raise
        vouched: dict[str, Any] = {}
        if decision.obligations:
            # before the first byte leaves: only bytes that passed them (released or scanned now)
            vouched = await self._vouched(path, handle, decision)
        check = await self._readable(path, handle, opened, decision if rel else None)
        transfer = secrets.token_hex(8)
        try:
            # durable before the first byte leaves: the download's one fsync
            await self.record(
                EventType.FILE_DOWNLOAD,
                EventOutcome.STARTED,
                transfer=transfer,
                path=path.text,
                rule=decision.rule,
                **vouched,
                **self._target(path),
            )
        except BaseException:
            await handle.close()
            raise
        self.traffic.transfers_open += 1
        download = Download(
            handle,
            transfer=transfer,
            path=path.text,
            report=self._reporter(EventType.FILE_DOWNLOAD, path, decision),
            check=check,
        )
        self.traffic.transfers[transfer] = (Op.READ, path.text, download)
        return download

    async def _vouched(
        self, path: VirtualPath, handle: ReadHandle, decision: Decision
    ) -> dict[str, Any]:
        """The quarantine item that vouches for these exact bytes, or a refusal."""
        keeper = getattr(self.site, "keeper", None)
        try:
            if keeper is None:
                raise StorageError(Fault.FORBIDDEN, "requires checks this gateway cannot make")
            return await clear_for_read(keeper, path.text, handle, decision)
        except StorageError as exc:
            await handle.close()
            await self.refuse("read", path.text, exc.detail)
            raise

    async def open_write(
        self, path: VirtualPath, *, size: int | None = None, mode: int = 0o644
    ) -> Upload:
        opened = moment(self.site.policy)  # before the decisions: see _still_writable
        decision = await self.authorize(Op.WRITE, path, size)
        if path.parts == (DEVICES,) or len(path.parts) < 2:
            raise StorageError(Fault.FORBIDDEN, "cannot write here")
        backend, rel, _ = self.locate(path)
        delete = await self._may_replace(path, backend, rel)
        keeper = getattr(self.site, "keeper", None)
        if decision.obligations and keeper is not None:
            # checks and approvals: into quarantine, never near the final name
            check = self._still_writable(path, backend, rel, opened, delete)
            return await open_quarantined(self, keeper, path, decision, check)
        handle = await backend.open_write(rel, mode=mode & 0o777)
        transfer = secrets.token_hex(8)
        self.traffic.transfers_open += 1
        try:
            await self.record(
                EventType.FILE_UPLOAD,
                EventOutcome.STARTED,
                durable=False,
                transfer=transfer,
                path=path.text,
                rule=decision.rule,
                temp=getattr(handle, "temp", None),  # recovery: bytes that had arrived
                **self._target(path),
            )
        except Exception:
            self.traffic.transfers_open -= 1
            await handle.abort()
            raise
        upload = Upload(
            handle,
            transfer=transfer,
            path=path.text,
            max_size=decision.max_size,
            report=self._reporter(EventType.FILE_UPLOAD, path, decision),
            check=self._still_writable(path, backend, rel, opened, delete),
            intend=self.commit_intent(path, decision, transfer),
            reorder=self.reorder,
        )
        self.traffic.transfers[transfer] = (Op.WRITE, path.text, upload)
        return upload

    @staticmethod
    def _custody(path: VirtualPath, result: TransferRecord) -> dict[str, Any]:
        """For a device: the hash the device reported and whether the write was atomic."""
        if path.top != DEVICES or result.direction is not Direction.UPLOAD:
            return {}
        return {"device_sha256": result.device_sha256, "atomic": result.atomic}

    def _reporter(self, type: str, path: VirtualPath, decision: Decision, **extra: Any) -> Report:
        async def report(result: TransferRecord) -> None:
            self.traffic.transfers_open -= 1
            self.traffic.transfers.pop(result.transfer, None)
            if result.direction is Direction.UPLOAD:
                self.traffic.bytes_in += result.bytes
            else:
                self.traffic.bytes_out += result.bytes
            await self.settled(
                type,
                str(result.outcome),
                transfer=result.transfer,
                path=result.path,
                bytes=result.bytes,
                sha256=result.sha256,
                duration=round(result.duration, 6),
                rule=decision.rule,
                error=result.error,
                note=self._notes.pop(result.transfer, None),
                **extra,
                **self._target(path),
                **self._custody(path, result),
            )

        return report

    # -- changes ----------------------------------------------------------------------

    async def _change(self, type: str, op: Op, path: VirtualPath, action: Change) -> None:
        await self.authorize(op, path)
        if len(path.parts) < 2:
            raise StorageError(Fault.FORBIDDEN, "cannot change the virtual root")
        backend, rel, _ = self.locate(path)
        fields = {"path": path.text, **self._target(path)}
        await self.effect(type, fields, lambda: action(backend, rel))

    async def mkdir(self, path: VirtualPath, mode: int = 0o755) -> None:
        async def action(backend: Backend, rel: RelPath) -> None:
            await backend.mkdir(rel, mode=mode & 0o777)

        await self._change(EventType.DIR_CREATE, Op.MKDIR, path, action)

    async def rmdir(self, path: VirtualPath) -> None:
        async def action(backend: Backend, rel: RelPath) -> None:
            await backend.rmdir(rel)

        await self._change(EventType.DIR_DELETE, Op.DELETE, path, action)

    async def remove(self, path: VirtualPath) -> None:
        async def action(backend: Backend, rel: RelPath) -> None:
            await backend.remove(rel)

        await self._change(EventType.FILE_DELETE, Op.DELETE, path, action)

    async def rename(self, old: VirtualPath, new: VirtualPath, *, overwrite: bool) -> None:
        await self.authorize(Op.RENAME, old)
        await self.authorize(Op.RENAME, new)
        if len(old.parts) < 2 or len(new.parts) < 2:
            raise StorageError(Fault.FORBIDDEN, "cannot rename an area or device")
        old_backend, old_rel, old_label = self.locate(old)
        _, new_rel, new_label = self.locate(new)
        if old_label != new_label:
            raise StorageError(Fault.UNSUPPORTED, "cannot rename across areas or devices")
        await self._authorize_rename(old, new, old_backend, (old_rel, new_rel), overwrite)
        fields = {"old_path": old.text, "new_path": new.text, "path": new.text, **self._target(new)}
        await self.effect(
            EventType.FILE_RENAME,
            fields,
            lambda: old_backend.rename(old_rel, new_rel, overwrite=overwrite),
        )
