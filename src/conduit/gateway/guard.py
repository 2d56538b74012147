"""The policy's side of a session: asking, refusing, and the rules that need facts.

:class:`Guard` is what :class:`conduit.gateway.operations.Operations` asks
before it touches storage: the policy's decision (recorded and refused when it
says no), what a user may see of a path (a drop folder is entered without
being listed), the rules that need the storage's facts (replacing a file needs
``delete``; a rename is a read of the old name and a write of the new one),
and the "still allowed?" checks the transfer pipeline asks before a commit
and before each read (a conduit's window may close mid-transfer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from conduit.audit.events import EventOutcome, EventType
from conduit.config.model import Op
from conduit.errors import Concealed, Denied, Fault, StorageError
from conduit.gateway.vfs import BadPath, VirtualPath
from conduit.policy import Decision, Policy, Rename, Request
from conduit.storage.base import Backend, ReadHandle, RelPath

if TYPE_CHECKING:
    from conduit.gateway.context import SessionInfo, Site, Traffic

T = TypeVar("T")


async def _occupied(backend: Backend, rel: RelPath) -> bool:
    """Does ``rel`` name something? Anything but "missing" counts as yes, except
    storage that cannot be reached (a device down): that is its own error, not
    a name taken, and is raised as such."""
    try:
        await backend.stat(rel)
    except StorageError as exc:
        if exc.fault is Fault.UNAVAILABLE:
            raise
        return exc.fault is not Fault.NOT_FOUND
    return True


def moment(policy: Policy) -> tuple[Policy, datetime]:
    """Which policy, which minute: a decision can only change when either does
    (the policy itself is kept, not its id, which a later one could reuse)."""
    return policy, policy.minute()


def same_moment(a: tuple[Policy, datetime], b: tuple[Policy, datetime]) -> bool:
    return a[0] is b[0] and a[1] == b[1]


class Guard:
    """Policy questions for one session (a base of ``Operations``)."""

    site: Site
    session: SessionInfo
    traffic: Traffic

    def _not_revoked(self) -> None:
        """A session a policy reload revoked is served nothing more, and nothing it
        has open commits, even before its connection is gone."""
        if self.traffic.revoked is not None:
            raise StorageError(
                Fault.FORBIDDEN,
                "access revoked by a policy reload",
                f"session revoked: {self.traffic.revoked}",
            )

    def served(self) -> None:
        """Raise what :meth:`_not_revoked` raises: for a caller that answers a
        question from what it learnt earlier, without asking the policy."""
        self._not_revoked()

    async def record(
        self, type: str, outcome: str, *, durable: bool = True, hold: bool = False, **fields: Any
    ) -> None:
        raise NotImplementedError

    def _ask(self, op: Op, path: VirtualPath, size: int | None = None) -> Decision:
        self._not_revoked()
        request = Request(self.session.user, self.session.source, op, path.text, size)
        return self.site.policy.decide(request)

    def _listed(self, folder: VirtualPath, names: list[str]) -> list[bool]:
        """Which of ``names`` (in ``folder``) a listing shows: the policy's
        answer about each, or one answer for all when it has one (asked as
        each page is read). A name the rule refuses (made outside the gateway)
        or a path too long cannot be reached by any operation, so it is not
        shown: its raw bytes would reach other users' terminals."""
        self._not_revoked()
        session = self.session
        every = self.site.policy.lists_every_name(session.user, session.source, folder.text)
        shown = []
        for name in names:
            try:
                child = folder.child(name)
            except BadPath:
                shown.append(False)
                continue
            shown.append(every or self._ask(Op.LIST, child).allowed)
        return shown

    async def authorize(self, op: Op, path: VirtualPath, size: int | None = None) -> Decision:
        """The policy's yes, or :class:`Denied` after recording why not."""
        self._not_revoked()
        return await self._enforce(self._ask(op, path, size), op, path)

    async def _enforce(self, decision: Decision, op: Op, path: VirtualPath) -> Decision:
        """``decision`` if it allows, else record why not and refuse."""
        if not decision.allowed:
            await self.record(
                EventType.ACCESS_DENIED,
                EventOutcome.DENIED,
                operation=str(op),
                path=path.text,
                reason=decision.detail,
                rule=decision.rule,
            )
            raise Denied(decision)
        if decision.obligations and op not in (Op.WRITE, Op.READ):
            # Only an upload can be held in quarantine, and only a download of
            # bytes that passed is served (operations.open_read): a rename
            # through a conduit with obligations would skip them. Fail closed.
            required = ", ".join(sorted(decision.obligations))
            reason = f"requires {required}, which this gateway enforces on transfers only"
            await self.record(
                EventType.ACCESS_DENIED,
                EventOutcome.DENIED,
                operation=str(op),
                path=path.text,
                reason=f"{decision.rule}: {reason}",
                rule=decision.rule,
            )
            raise StorageError(Fault.FORBIDDEN, reason)
        return decision

    def _may_look(self, path: VirtualPath) -> bool:
        """May the user see what is at ``path`` (list or read it)?"""
        return any(self._ask(op, path).allowed for op in (Op.LIST, Op.READ))

    def _may_write_into(self, path: VirtualPath) -> bool:
        """Is ``path`` a folder the user may write into (a drop folder), now or
        when its conduit's window opens? Entering it needs no listing."""
        self._not_revoked()
        request = Request(self.session.user, self.session.source, Op.WRITE, path.text, folder=True)
        decision = self.site.policy.decide(request)
        return decision.allowed or decision.window_closed

    async def stat_allowed(self, path: VirtualPath) -> None:
        """Naming a path (realpath, statvfs) needs list or read on it, write into
        it (a drop folder) or write to it; it says nothing of what is there."""
        if self._may_look(path) or self._may_write_into(path):
            return
        if self._ask(Op.WRITE, path).allowed:
            return
        await self.authorize(Op.LIST, path)

    async def _unconcealed(self, call: Awaitable[T], op: Op, path: VirtualPath) -> T:
        """``call``'s result; what the storage refuses as missing although it is
        there (a link leaving the area) is journalled with the real reason."""
        try:
            return await call
        except Concealed as exc:
            await self.record(
                EventType.ACCESS_DENIED,
                EventOutcome.DENIED,
                operation=str(op),
                path=path.text,
                reason=exc.detail,
                rule="storage",
            )
            raise

    async def _may_replace(
        self, path: VirtualPath, backend: Backend, rel: RelPath, asked: Decision | None = None
    ) -> Decision:
        """An upload over an existing file destroys it: that needs ``delete`` on it.
        ``asked``: the policy's answer on that delete, when the caller has it from
        the same policy and minute. Returns the answer (yes, or the name is free)."""
        decision = asked or self._ask(Op.DELETE, path)
        if decision.allowed or not await _occupied(backend, rel):
            return decision  # (asking the policy first spares most uploads a stat)
        decision = replace(
            decision,
            reason="the name is taken and replacing a file needs delete on it",
            detail=f"{decision.detail} (the upload would replace an existing file)",
        )
        await self._enforce(decision, Op.DELETE, path)
        return decision  # not reached: _enforce refuses a decision that does not allow

    async def _authorize_rename(
        self,
        old: VirtualPath,
        new: VirtualPath,
        backend: Backend,
        rels: tuple[RelPath, RelPath],
        overwrite: bool,
    ) -> None:
        """The rename rule (a read of the old name, a write of the new one, delete
        on what it replaces), fed with what only the storage knows."""
        user, source = self.session.user, self.session.source
        policy = self.site.policy
        try:
            st = await backend.stat(rels[0])
        except StorageError as exc:
            if exc.fault is Fault.NOT_FOUND:
                # Refuse as the policy would whether or not the name exists.
                await self._enforce(
                    policy.decide_rename(Rename(user, source, old.text, new.text)), Op.RENAME, old
                )
            raise
        replaces = overwrite and await _occupied(backend, rels[1])
        size = None if st.is_dir else st.size
        facts = Rename(user, source, old.text, new.text, size, st.is_dir, replaces)
        await self._enforce(policy.decide_rename(facts), Op.RENAME, old)

    def _still_writable(
        self,
        path: VirtualPath,
        backend: Backend,
        rel: RelPath,
        opened: tuple[Policy, datetime],
        delete: Decision,
    ) -> Callable[[int], Awaitable[None]]:
        """Asked by the pipeline just before an upload commits: the window may
        have closed, and the name may have been taken, since it was opened.
        Within the minute it was opened in, under the same policy, the write
        and delete decisions cannot have changed (windows have minute
        resolution; the size limit is enforced on the stream), so only the
        name is checked again. ``opened``: the moment taken *before* those
        decisions were asked (a minute that turned in between asks again);
        ``delete``: the delete decision asked then."""

        async def check(size: int) -> None:
            self._not_revoked()
            same = same_moment(moment(self.site.policy), opened)
            if not same:
                await self.authorize(Op.WRITE, path, size)
            await self._may_replace(path, backend, rel, delete if same else None)

        return check

    async def _readable(
        self,
        path: VirtualPath,
        handle: ReadHandle,
        opened: tuple[Policy, datetime],
        decision: Decision | None,
    ) -> Callable[[int], Awaitable[None]]:
        """The download's "still allowed?" check, asked once now with the file's
        real size (before a legacy SCP header promises it); the handle is closed
        if the answer is no.

        ``decision``: the read allowed at the open, asked without a size under
        ``opened`` (the moment taken before it), or None (ask again). Within
        that moment a size the conduit it names takes cannot change the answer:
        the conduits tried before it were passed over for their paths or
        windows, which the size does not touch. So the policy is not asked
        again then: the check compares ``opened`` with its own moment. (Only for a
        file below a target's root: the decision on a root is a folder's, whose
        ``max_size`` says nothing.)"""
        known = (
            decision is not None
            and decision.allowed
            and (decision.max_size is None or handle.size <= decision.max_size)
        )
        check = self._still_readable(path, handle.size, opened if known else None)
        try:
            await check(0)
        except StorageError:
            await handle.close()
            raise
        return check

    def _still_readable(
        self, path: VirtualPath, size: int, answered: tuple[Policy, datetime] | None = None
    ) -> Callable[[int], Awaitable[None]]:
        """Asked before every read: a download ends when its window does. The
        policy is asked again only when the minute (windows' resolution) or the
        policy itself (a reload) has changed; the first read also checks the
        file's size against the conduit's limit. ``answered``: the moment in
        which the read with this size is already known to be allowed."""
        asked: list[tuple[Policy, datetime]] = [answered] if answered is not None else []

        async def check(offset: int) -> None:
            self._not_revoked()
            now = moment(self.site.policy)
            if asked and same_moment(asked[0], now):
                return
            await self.authorize(Op.READ, path, size)
            asked[:] = [now]

        return check
