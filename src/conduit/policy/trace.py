"""One evaluation's state and explanation, shared by the engine's checks.

:meth:`conduit.policy.engine.Policy.decide` runs its checks in the contract's
order; each reads and extends a :class:`Trace` and either passes (noting its
step for ``explain``) or returns the refusal :meth:`Trace.deny` builds from
what is known by then, so no check repeats the zones and the grant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conduit.policy.compile import CompiledGrant, Target
from conduit.policy.decision import ABSENT, Decision, IPAddress, Request, Step


@dataclass(slots=True)
class Trace:
    """One evaluation: what is known so far, and the explanation's steps.

    Each check either notes its answer (:meth:`passed`) and returns ``None``,
    or returns the refusal that :meth:`deny` builds from what is known by then
    (the zones, the grant), so no check repeats them.
    """

    request: Request
    steps: list[Step] | None
    what: str = ""
    address: IPAddress | None = None
    parts: tuple[str, ...] = ()
    client_zone: str | None = None
    target: Target | None = None
    grants: list[CompiledGrant] = field(default_factory=list)
    grant: CompiledGrant | None = None

    def passed(self, question: str, rule: str | None, text: str) -> None:
        if self.steps is not None:
            self.steps.append(Step(question, True, rule, text))

    def deny(
        self,
        question: str,
        text: str,
        *,
        rule: str,
        reason: str,
        detail: str | None = None,
        step_rule: str | None = None,
        hidden: bool = False,
        window_closed: bool = False,
    ) -> Decision:
        """Refuse: ``text`` explains the step, ``detail`` (default ``text``)
        follows the request in the audit's detail."""
        if self.steps is not None:
            self.steps.append(Step(question, False, step_rule, text))
        return Decision(
            False,
            rule,
            ABSENT if hidden else reason,
            f"{self.what}: {detail or text}",
            grant=self.grant.rule if self.grant else None,
            client_zone=self.client_zone,
            target_zone=self.target.zone if self.target else None,
            hidden=hidden,
            window_closed=window_closed,
        )

    def allow(self, rule: str, detail: str, **fields: Any) -> Decision:
        return Decision(
            True,
            rule,
            "allowed",
            f"{self.what}: {detail}",
            grant=self.grant.rule if self.grant else None,
            client_zone=self.client_zone,
            target_zone=self.target.zone if self.target else None,
            **fields,
        )
