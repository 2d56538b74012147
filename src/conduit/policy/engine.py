"""The decision engine: ``Policy.decide(Request) -> Decision``.

Semantics (the contract the gateway, ``check`` and ``explain`` share):

- **Deny by default.** Evaluation stops at the first failing step, in order:
  the path (no NUL), the user, the client's zone, the user's own ``networks``,
  the target, the grant, the conduit.
- **Client zone**: the zone whose networks hold the source address (longest
  prefix wins; ``check`` rejects overlaps anyway). No zone: everything is
  denied, even listing ``/``. A user's ``networks``, if set, narrow further.
- **Paths** are normalised here again (``.``/``..``/``//`` resolved, clamped at
  ``/``), so a ``..`` can never reach more than the normalised path.
- **Targets**: ``/AREA/...`` and ``/devices/DEVICE/...``. ``/`` and
  ``/devices`` are virtual, read-only directories: only ``list`` is allowed on
  them (``/devices`` only when some device is visible). On the root of an area
  or device (``/firmware``) only ``list`` and ``read`` (a stat) are allowed.
  Unknown target: deny.
- **Grants** name an area or ``devices/<glob>`` (glob over device names). A
  grant's ``paths`` match the path relative to the target (see
  :mod:`conduit.policy.patterns`). For ``list`` and ``mkdir`` the path is a
  directory: allowed if some pattern could match it or something below it.
  For every other op the path itself must match. No ``paths``: everything.
  The first matching grant (roles in the user's order, grants in file order)
  decides.
- **Direction**: ``write``, ``mkdir``, ``rename`` and ``delete`` flow
  client-zone → target-zone; ``read`` and ``list`` flow target-zone →
  client-zone. Same zone: no conduit needed.
- **Conduits** for that (from, to) pair are tried in file order; the first
  whose ``paths`` match (against the virtual path without its leading ``/``,
  e.g. ``firmware/a.bin``, same glob rules; none: all), whose ``window`` is
  open now (gateway time zone) and whose ``max_size`` is not exceeded by a
  known size, allows. Its ``max_size`` is returned for the streaming check.
  If none allows, the candidate that got furthest explains the denial.
- **Obligations** (``require``) are returned for ``read``, ``write`` and
  ``rename`` (ops that deliver content under a name); ``list``, ``mkdir`` and
  ``delete`` move no content and carry none. An obligation the gateway cannot
  carry out (not in ``Policy.enforceable``) refuses the request here, with
  the conduit as its rule: the gateway, ``check`` and ``explain`` agree.
- **Hidden targets**: a target no grant of the user names, or one whose zone
  no conduit joins to the client's in either direction, is refused exactly as
  a missing one (``Decision.hidden``, reason :data:`ABSENT`).
- **Folders** (``Request.folder``): patterns allow a folder where they could
  match something below it; ``write`` on a folder asks whether a file may be
  written into it (a drop folder), which the target's root allows.
- **Renames** are decided by :meth:`Policy.decide_rename`, half by half (see
  :mod:`conduit.policy.rename`).
- **Approvals** (``approve``) are decided by :meth:`Approvals._approval`:
  a person on the gateway host releases a quarantined file; no zone, no
  conduit, only a grant of ``approve`` whose paths match the file.
- ``Decision.rule`` names the item that decided: ``conduits[NAME]`` when a
  conduit allowed or refused, ``roles.ROLE.grants[I]`` for a same-zone
  allow, or ``deny:REASON`` when nothing in the file applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conduit.config.model import Config, Obligation, Op
from conduit.names import DEVICES
from conduit.policy.approve import Approvals
from conduit.policy.clock import LocalMinute
from conduit.policy.compile import PolicyError, plain, shown
from conduit.policy.conduits import CompiledConduit, Miss, first_open
from conduit.policy.decision import (
    Decision,
    Explanation,
    IPAddress,
    Request,
    Step,
)
from conduit.policy.patterns import normalise
from conduit.policy.rename import FolderRenames, Rename, combine, halves
from conduit.policy.trace import Trace

#: Ops that change the target's zone (client → target); the rest read from it.
INBOUND_OPS = frozenset({Op.WRITE, Op.MKDIR, Op.RENAME, Op.DELETE})
#: Ops whose path is a directory: allowed where a pattern could match below.
DIRECTORY_OPS = frozenset({Op.LIST, Op.MKDIR})
#: Ops that deliver file content under a name, and so carry obligations.
CONTENT_OPS = frozenset({Op.READ, Op.WRITE, Op.RENAME})


class Policy(Approvals, FolderRenames):
    """A compiled policy: indexes built once, ``decide`` cheap and pure."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], datetime] | None = None,
        enforceable: frozenset[Obligation] = frozenset(),
    ) -> None:
        self.config = config
        # The obligations this gateway can carry out; a conduit requiring any
        # other is refused here, so ``decide``, ``explain`` and clients agree.
        self.enforceable = enforceable
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        try:
            self.timezone = ZoneInfo(config.gateway.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(
                f"gateway.timezone: unknown time zone {config.gateway.timezone!r}"
            ) from None
        self._minute = LocalMinute(self.timezone)
        super().__init__(config)

    # -- lookups -------------------------------------------------------------

    def visible_devices(self, user: str, source: IPAddress) -> list[str]:
        """Device names ``user`` may list from ``source`` (entries of ``/devices``)."""
        return sorted(
            name
            for name in self._listable(user)
            if self.decide(Request(user, source, Op.LIST, f"/{DEVICES}/{name}")).allowed
        )

    def roots(self, user: str, source: IPAddress) -> list[str]:
        """Top-level names visible at ``/``: listable areas, and ``devices`` if any."""
        names = [
            name
            for name in self._areas
            if self.decide(Request(user, source, Op.LIST, f"/{name}")).allowed
        ]
        if self._any_device_visible(user, source):
            names.append(DEVICES)
        return sorted(names)

    def _any_device_visible(self, user: str, source: IPAddress) -> bool:
        return any(
            self.decide(Request(user, source, Op.LIST, f"/{DEVICES}/{name}")).allowed
            for name in self._listable(user)
        )

    def now(self) -> datetime:
        """The clock's time in the gateway's time zone."""
        return self.clock().astimezone(self.timezone)

    def minute(self) -> datetime:
        """:meth:`now` to the minute, all a decision depends on (kept per minute)."""
        return self._minute(self.clock())

    # -- decisions -----------------------------------------------------------

    def decide(self, request: Request) -> Decision:
        """Allow or deny ``request``; deny by default (see the module docstring)."""
        return self._evaluate(request, None)

    def lists_every_name(self, user: str, source: IPAddress, folder: str) -> bool:
        """Whether ``list`` is allowed now on every name directly in ``folder``,
        known without the names: one question per listing page instead of one
        per entry. True only when no pattern can tell the names apart (a grant
        of ``list`` without ``paths``; same zone, or a conduit without ``paths``
        open now); False means "ask per name", not "refused". The areas in
        ``/`` and the devices in ``/devices`` are targets of their own: False."""
        t = Trace(Request(user, source, Op.LIST, folder, folder=True), None)
        if self._who(t) is not None or not t.parts or t.parts == (DEVICES,):
            return False
        if self._where(t) is not None or not any(
            Op.LIST in g.ops and not g.patterns for g in t.grants
        ):
            return False
        assert t.target is not None and t.client_zone is not None
        if t.client_zone == t.target.zone:
            return True
        flow = (t.target.zone, t.client_zone)  # listing flows from the target
        open_to_all = [c for c in self._conduits.get(flow, []) if not c.patterns]
        tz = self.config.gateway.timezone
        chosen = open_to_all and first_open(open_to_all, t.parts, True, None, self.minute, tz, "")
        return isinstance(chosen, CompiledConduit)

    def explain(self, request: Request) -> Explanation:
        """Like :meth:`decide`, with every step that led to the answer."""
        steps: list[Step] = []
        decision = self._evaluate(request, steps)
        return Explanation(request, decision, tuple(steps), self.now())

    def decide_rename(self, rename: Rename) -> Decision:
        """Allow or deny a rename: both halves and the replacement (see
        :mod:`conduit.policy.rename`)."""
        return self._rename(rename, None)

    def explain_rename(self, rename: Rename) -> Explanation:
        """Like :meth:`decide_rename`, with the steps of every half."""
        steps: list[Step] = []
        decision = self._rename(rename, steps)
        return Explanation(rename.request(), decision, tuple(steps), self.now(), rename.new)

    def _rename(self, rename: Rename, steps: list[Step] | None) -> Decision:
        results: list[tuple[str, Decision]] = []
        for label, request in halves(rename):
            mine: list[Step] | None = [] if steps is not None else None
            decision = self._evaluate(request, mine)
            if steps is not None and mine is not None:
                # Who and from where are the same for every half: say them once.
                same = results and decision.allowed
                skip = ("user", "zone") if same else ()
                steps.extend(replace(s, part=label) for s in mine if s.question not in skip)
            results.append((label, decision))
            if not decision.allowed:
                return combine(rename, results)
        return combine(rename, results, self._rename_refusal(rename, steps))

    def _evaluate(self, request: Request, steps: list[Step] | None) -> Decision:
        """Run the checks in the contract's order; the first refusal ends it."""
        trace = Trace(request, steps)
        if request.op is Op.APPROVE:
            return self._approval(trace)
        return (
            self._who(trace)
            or self._virtual(trace)
            or self._where(trace)
            or self._granted(trace)
            or self._flow(trace)
        )

    def _who(self, t: Trace) -> Decision | None:
        """The path, the user, the client's zone and the user's own networks."""
        request = t.request
        user, op = request.user, request.op
        if "\x00" in request.path:
            t.what = f"{user} {op} {request.path!r}"
            return t.deny(
                "path", "the path contains a NUL byte", rule="deny:bad-path", reason="invalid path"
            )
        t.parts = normalise(request.path)
        t.address = address = plain(request.source)
        text = shown(address)
        t.what = f"{user} {op} /{'/'.join(t.parts)} from {text}"
        if user not in self._area_grants:
            return t.deny(
                "user",
                f"{user!r} is not in [users]",
                rule="deny:unknown-user",
                reason="unknown user",
                detail="user not in the policy",
            )
        t.passed("user", f"users.{user}", f"{user} is a user")
        t.client_zone = self.zone_of(address)
        if t.client_zone is None:
            return t.deny(
                "zone",
                f"{text} is in no zone's networks",
                rule="deny:no-zone",
                reason="source address in no zone",
            )
        t.passed("zone", f"zones.{t.client_zone}", f"{text} is in zone {t.client_zone}")
        networks = self._user_networks.get(user)
        if networks is not None and not any(
            address.version == net.version and address in net for net in networks
        ):
            rule = f"users.{user}.networks"
            return t.deny(
                "user networks",
                f"{text} is outside {rule}",
                rule=rule,
                reason="not allowed from this address",
                step_rule=rule,
            )
        return None

    def _virtual(self, t: Trace) -> Decision | None:
        """``/`` and ``/devices``: read-only virtual directories."""
        if t.parts and not (t.parts[0] == DEVICES and len(t.parts) == 1):
            return None
        path = "/" + "/".join(t.parts)
        if t.request.op is not Op.LIST:
            return t.deny(
                "target",
                f"{path} is a read-only virtual directory",
                rule="deny:virtual",
                reason="read-only directory",
                detail=f"{path} is a virtual directory; only list is allowed",
            )
        assert t.address is not None
        if t.parts and not self._any_device_visible(t.request.user, t.address):
            return t.deny(
                "grant",
                "no device is visible to this user from here: hidden",
                rule="deny:hidden",
                reason="",
                detail="no device is listable",
                hidden=True,
            )
        t.passed("target", None, f"{path} is a virtual directory; listing is allowed")
        return t.allow("virtual", "virtual directory")

    def _where(self, t: Trace) -> Decision | None:
        """The area or device, hidden unless the user could ever use it from here."""
        target = self._target(t.parts)
        if target is None:
            return t.deny(
                "target",
                f"/{'/'.join(t.parts)} names no area or device",
                rule="deny:unknown-target",
                reason="",
                detail=f"no area or device {'/'.join(t.parts[:2])!r}",
                hidden=True,
            )
        t.target, t.grants = target, self._grants_on(t.request.user, target)
        assert t.client_zone is not None
        if not self._sees(t.grants, t.client_zone, target.zone):
            # Nothing this user could ever do there from here: the target must
            # answer exactly as one that does not exist.
            why = (
                f"no role of {t.request.user} grants anything on {target.kind} {target.name}"
                if not t.grants
                else f"no conduit between {t.client_zone} and {target.zone} in either direction"
            )
            return t.deny(
                "target",
                f"{why}: hidden, answered as if it did not exist",
                rule="deny:hidden",
                reason="",
                detail=why,
                hidden=True,
            )
        t.passed(
            "target",
            f"{target.kind}s.{target.name}",
            f"{target.kind} {target.name} in zone {target.zone}",
        )
        op = t.request.op
        into = op is Op.WRITE and t.request.folder  # writing into the root, not replacing it
        if not target.parts and op not in (Op.LIST, Op.READ) and not into:
            return t.deny(
                "target",
                f"the root of {target.kind} {target.name} cannot be changed",
                rule="deny:target-root",
                reason=f"{op} not allowed on /{'/'.join(t.parts)}",
                detail=f"{op} on the root of {target.kind} {target.name}",
            )
        return None

    def _directory(self, t: Trace) -> bool:
        """Is the request about a folder (patterns allow it where they could
        match something below)?"""
        assert t.target is not None
        return t.request.op in DIRECTORY_OPS or not t.target.parts or t.request.folder

    def _granted(self, t: Trace) -> Decision | None:
        """Who may do what where: the first grant whose ops and paths match."""
        target, op = t.target, t.request.op
        assert target is not None
        directory = self._directory(t)
        rel = "/".join(target.parts)
        last = target.parts[-1] if target.parts else ""
        for candidate in t.grants:
            if op in candidate.ops and (
                not candidate.patterns
                or any(
                    p.could_contain(target.parts) if directory else p.matches(rel, last)
                    for p in candidate.patterns
                )
            ):
                t.grant = candidate
                t.passed(
                    "grant",
                    candidate.rule,
                    f"{candidate.rule} grants {op} on {candidate.config.target}",
                )
                return None
        near = [g.rule for g in t.grants if op in g.ops]
        why = (
            f"{', '.join(near)} allow {op} but no paths pattern matches {rel!r}"
            if near
            else f"no role of {t.request.user} grants {op} on {target.kind} {target.name}"
        )
        return t.deny(
            "grant",
            why,
            rule="deny:no-grant",
            reason=f"{op} not granted",
            step_rule=near[0] if near else None,
        )

    def _flow(self, t: Trace) -> Decision:
        """May data flow between the zones: the first open conduit, and the
        obligations it imposes that this gateway can enforce."""
        target, grant, op = t.target, t.grant, t.request.op
        assert target is not None and grant is not None and t.client_zone is not None
        if t.client_zone == target.zone:
            t.passed("flow", None, f"same zone {t.client_zone}: no conduit needed")
            return t.allow(grant.rule, f"{grant.rule}, same zone {t.client_zone}")
        source, dest = (
            (t.client_zone, target.zone) if op in INBOUND_OPS else (target.zone, t.client_zone)
        )
        flow = f"{source} -> {dest}"
        conduits = self._conduits.get((source, dest))
        if not conduits:
            return t.deny(
                "conduit",
                f"no conduit from {source} to {dest}",
                rule="deny:no-conduit",
                reason=f"no conduit {flow}",
                detail=f"{grant.rule} grants it but no conduit allows {flow}",
            )
        directory = self._directory(t)
        chosen = first_open(
            conduits,
            t.parts,
            directory,
            t.request.size,
            self.minute,
            self.config.gateway.timezone,
            flow,
        )
        if isinstance(chosen, Miss):
            return t.deny(
                "conduit",
                chosen.why,
                rule=chosen.conduit.rule,
                reason=chosen.reason,
                step_rule=chosen.conduit.rule,
                window_closed=chosen.closed,
            )
        content = op in CONTENT_OPS and not directory
        obligations = chosen.obligations if content else frozenset()
        missing = obligations - self.enforceable
        if missing:
            # A conduit that requires a check this gateway cannot make must not
            # pass silently: fail closed, and say so in explain too.
            required = ", ".join(sorted(missing))
            return t.deny(
                "obligations",
                f"{chosen.rule} requires {required}, which this gateway cannot enforce yet",
                rule=chosen.rule,
                reason=f"requires {required}, which this gateway cannot enforce yet",
                detail=f"{chosen.rule} requires {required}; not enforceable: fail closed",
                step_rule=chosen.rule,
            )
        vrel = "/".join(t.parts)
        t.passed("conduit", chosen.rule, f"{chosen.rule} allows {flow} for {vrel!r}")
        return t.allow(
            chosen.rule,
            f"{grant.rule} via {chosen.rule} ({flow})",
            obligations=obligations,
            max_size=chosen.max_size if content else None,
            conduit=chosen.rule,
        )


__all__ = [
    "Decision",
    "Explanation",
    "Policy",
    "PolicyError",
    "Request",
    "Step",
]
