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
  ``delete`` move no content and carry none.
- **Hidden targets**: a target no grant of the user names, or one whose zone
  no conduit joins to the client's in either direction, is refused exactly as
  a missing one (``Decision.hidden``, reason :data:`ABSENT`).
- **Folders** (``Request.folder``): patterns allow a folder where they could
  match something below it; ``write`` on a folder asks whether a file may be
  written into it (a drop folder), which the target's root allows.
- **Renames** are decided by :meth:`Policy.decide_rename`, half by half (see
  :mod:`conduit.policy.rename`).
- ``Decision.rule`` names the item that decided: ``conduits[NAME]`` when a
  conduit allowed or refused, ``roles.ROLE.grants[I]`` for a same-zone
  allow, or ``deny:REASON`` when nothing in the file applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conduit.config.model import Config, Op
from conduit.policy.compile import DEVICES, Index, PolicyError, plain
from conduit.policy.conduits import Miss, first_open
from conduit.policy.decision import (
    ABSENT,
    Decision,
    Explanation,
    IPAddress,
    Request,
    Step,
)
from conduit.policy.patterns import normalise
from conduit.policy.rename import Rename, combine, deep_patterns, halves

#: Ops that change the target's zone (client → target); the rest read from it.
INBOUND_OPS = frozenset({Op.WRITE, Op.MKDIR, Op.RENAME, Op.DELETE})
#: Ops whose path is a directory: allowed where a pattern could match below.
DIRECTORY_OPS = frozenset({Op.LIST, Op.MKDIR})
#: Ops that deliver file content under a name, and so carry obligations.
CONTENT_OPS = frozenset({Op.READ, Op.WRITE, Op.RENAME})


def _deny(
    rule: str,
    reason: str,
    detail: str,
    *,
    grant: str | None = None,
    client_zone: str | None = None,
    target_zone: str | None = None,
    hidden: bool = False,
    window_closed: bool = False,
) -> Decision:
    return Decision(
        False,
        rule,
        ABSENT if hidden else reason,
        detail,
        grant=grant,
        client_zone=client_zone,
        target_zone=target_zone,
        hidden=hidden,
        window_closed=window_closed,
    )


class Policy(Index):
    """A compiled policy: indexes built once, ``decide`` cheap and pure."""

    def __init__(self, config: Config, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        try:
            self.timezone = ZoneInfo(config.gateway.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(
                f"gateway.timezone: unknown time zone {config.gateway.timezone!r}"
            ) from None
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

    # -- decisions -----------------------------------------------------------

    def decide(self, request: Request) -> Decision:
        """Allow or deny ``request``; deny by default (see the module docstring)."""
        return self._evaluate(request, None)

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

    def _rename_refusal(
        self, rename: Rename, steps: list[Step] | None
    ) -> tuple[str, str, str] | None:
        """What refuses a rename whose halves all pass: another target, or a
        folder whose contents the patterns would judge by their folder names."""
        old, new = normalise(rename.old), normalise(rename.new)
        old_target, new_target = self._target(old), self._target(new)
        assert old_target is not None and new_target is not None  # the halves passed
        if (old_target.kind, old_target.name) != (new_target.kind, new_target.name):
            why = "the names are in different areas or devices"
            if steps is not None:
                steps.append(Step("target", False, None, why, "rename"))
            return ("deny:cross-target", "cannot rename across areas or devices", why)
        if not rename.folder:
            return None
        client_zone = self.zone_of(rename.source)
        zone = old_target.zone
        prefix = 1 if old_target.kind == "area" else 2
        patterns = [(p, 0) for g in self._grants_on(rename.user, old_target) for p in g.patterns]
        if client_zone != zone:
            for pair in ((client_zone, zone), (zone, client_zone)):
                for conduit in self._conduits.get(pair, []):  # type: ignore[arg-type]
                    patterns.extend((p, prefix) for p in conduit.patterns)
        deep = deep_patterns(patterns)
        if not deep:
            return None
        why = f"patterns {deep} depend on folder names below {old_target.name}"
        if steps is not None:
            steps.append(Step("folder", False, None, why, "rename"))
        return (
            "deny:folder-rename",
            "renaming folders is not allowed here: the policy depends on folder names",
            why,
        )

    def _evaluate(self, request: Request, steps: list[Step] | None) -> Decision:
        def step(question: str, ok: bool, rule: str | None, text: str) -> None:
            if steps is not None:
                steps.append(Step(question, ok, rule, text))

        op, user = request.op, request.user
        if "\x00" in request.path:
            step("path", False, None, "the path contains a NUL byte")
            return _deny(
                "deny:bad-path",
                "invalid path",
                f"{user} {op} {request.path!r}: the path contains NUL",
            )
        parts = normalise(request.path)
        path = "/" + "/".join(parts)
        address = plain(request.source)
        what = f"{user} {op} {path} from {address}"

        if user not in self._area_grants:
            step("user", False, None, f"{user!r} is not in [users]")
            return _deny("deny:unknown-user", "unknown user", f"{what}: user not in the policy")
        step("user", True, f"users.{user}", f"{user} is a user")
        client_zone = self.zone_of(address)
        if client_zone is None:
            step("zone", False, None, f"{address} is in no zone's networks")
            return _deny(
                "deny:no-zone",
                "source address in no zone",
                f"{what}: {address} is in no zone",
            )
        step("zone", True, f"zones.{client_zone}", f"{address} is in zone {client_zone}")
        networks = self._user_networks.get(user)
        if networks is not None and not any(
            address.version == net.version and address in net for net in networks
        ):
            rule = f"users.{user}.networks"
            step("user networks", False, rule, f"{address} is outside {rule}")
            return _deny(
                rule,
                "not allowed from this address",
                f"{what}: address outside {rule}",
                client_zone=client_zone,
            )

        # Virtual directories: "/" and "/devices".
        if not parts or (parts[0] == DEVICES and len(parts) == 1):
            if op is not Op.LIST:
                step("target", False, None, f"{path} is a read-only virtual directory")
                return _deny(
                    "deny:virtual",
                    "read-only directory",
                    f"{what}: {path} is a virtual directory; only list is allowed",
                    client_zone=client_zone,
                )
            if parts and not self._any_device_visible(user, address):
                step("grant", False, None, "no device is visible to this user from here: hidden")
                return _deny(
                    "deny:hidden",
                    "",
                    f"{what}: no device is listable",
                    client_zone=client_zone,
                    hidden=True,
                )
            step("target", True, None, f"{path} is a virtual directory; listing is allowed")
            return Decision(
                True, "virtual", "allowed", f"{what}: virtual directory", client_zone=client_zone
            )

        target = self._target(parts)
        if target is None:
            step("target", False, None, f"{path} names no area or device")
            return _deny(
                "deny:unknown-target",
                "",
                f"{what}: no area or device {'/'.join(parts[:2])!r}",
                client_zone=client_zone,
                hidden=True,
            )
        target_zone = target.zone
        grants = self._grants_on(user, target)
        if not self._sees(grants, client_zone, target_zone):
            # Nothing this user could ever do there from here: the target must
            # answer exactly as one that does not exist.
            why = (
                f"no role of {user} grants anything on {target.kind} {target.name}"
                if not grants
                else f"no conduit between {client_zone} and {target_zone} in either direction"
            )
            step("target", False, None, f"{why}: hidden, answered as if it did not exist")
            return _deny(
                "deny:hidden",
                "",
                f"{what}: {why}",
                client_zone=client_zone,
                target_zone=target_zone,
                hidden=True,
            )
        step(
            "target",
            True,
            f"{target.kind}s.{target.name}",
            f"{target.kind} {target.name} in zone {target.zone}",
        )
        into = op is Op.WRITE and request.folder  # writing into the root, not replacing it
        if not target.parts and op not in (Op.LIST, Op.READ) and not into:
            step(
                "target", False, None, f"the root of {target.kind} {target.name} cannot be changed"
            )
            return _deny(
                "deny:target-root",
                f"{op} not allowed on {path}",
                f"{what}: {op} on the root of {target.kind} {target.name}",
                client_zone=client_zone,
                target_zone=target_zone,
            )

        # 1. Who may do what where.
        directory = op in DIRECTORY_OPS or not target.parts or request.folder
        rel = "/".join(target.parts)
        last = target.parts[-1] if target.parts else ""
        grant = None
        for candidate in grants:
            if op in candidate.ops and (
                not candidate.patterns
                or any(
                    p.could_contain(target.parts) if directory else p.matches(rel, last)
                    for p in candidate.patterns
                )
            ):
                grant = candidate
                break
        if grant is None:
            near = [g.rule for g in grants if op in g.ops]
            why = (
                f"{', '.join(near)} allow {op} but no paths pattern matches {rel!r}"
                if near
                else f"no role of {user} grants {op} on {target.kind} {target.name}"
            )
            step("grant", False, near[0] if near else None, why)
            return _deny(
                "deny:no-grant",
                f"{op} not granted",
                f"{what}: {why}",
                client_zone=client_zone,
                target_zone=target_zone,
            )
        step("grant", True, grant.rule, f"{grant.rule} grants {op} on {grant.config.target}")

        # 2. May data flow between these zones?
        if client_zone == target.zone:
            step("flow", True, None, f"same zone {client_zone}: no conduit needed")
            return Decision(
                True,
                grant.rule,
                "allowed",
                f"{what}: {grant.rule}, same zone {client_zone}",
                grant=grant.rule,
                client_zone=client_zone,
                target_zone=target_zone,
            )
        source, dest = (
            (client_zone, target.zone) if op in INBOUND_OPS else (target.zone, client_zone)
        )
        flow = f"{source} -> {dest}"
        conduits = self._conduits.get((source, dest))
        if not conduits:
            step("conduit", False, None, f"no conduit from {source} to {dest}")
            return _deny(
                "deny:no-conduit",
                f"no conduit {flow}",
                f"{what}: {grant.rule} grants it but no conduit allows {flow}",
                grant=grant.rule,
                client_zone=client_zone,
                target_zone=target_zone,
            )
        vrel = "/".join(parts)
        chosen = first_open(
            conduits, parts, directory, request.size, self.now, self.config.gateway.timezone, flow
        )
        if isinstance(chosen, Miss):
            step("conduit", False, chosen.conduit.rule, chosen.why)
            return _deny(
                chosen.conduit.rule,
                chosen.reason,
                f"{what}: {chosen.why}",
                grant=grant.rule,
                client_zone=client_zone,
                target_zone=target_zone,
                window_closed=chosen.closed,
            )
        conduit = chosen
        content = op in CONTENT_OPS and not directory
        obligations = conduit.obligations if content else frozenset()
        limit = conduit.max_size if content else None
        step("conduit", True, conduit.rule, f"{conduit.rule} allows {flow} for {vrel!r}")
        return Decision(
            True,
            conduit.rule,
            "allowed",
            f"{what}: {grant.rule} via {conduit.rule} ({flow})",
            obligations,
            limit,
            grant=grant.rule,
            conduit=conduit.rule,
            client_zone=client_zone,
            target_zone=target_zone,
        )


__all__ = [
    "Decision",
    "Explanation",
    "Policy",
    "PolicyError",
    "Request",
    "Step",
]
