"""Who may release a quarantined file: the ``approve`` op.

An approval is not a transfer: it is given on the gateway's host (``conduit
approve``), so the approver's network address and the conduits between zones
do not apply. What applies is the same grant machinery as every other op: a
role of the approver grants ``approve`` on the file's area or device, and the
grant's ``paths`` match the file (file semantics: no folder approvals). That
the approver is not the uploader is the quarantine's rule, not the policy's:
the policy cannot know who uploaded.
"""

from __future__ import annotations

from conduit.policy.compile import Index
from conduit.policy.decision import Decision
from conduit.policy.patterns import normalise
from conduit.policy.trace import Trace


class Approvals(Index):
    """The ``approve`` half of :class:`~conduit.policy.engine.Policy`."""

    def _granted(self, t: Trace) -> Decision | None:
        raise NotImplementedError  # the engine's grant step

    def _approval(self, t: Trace) -> Decision:
        request = t.request
        user = request.user
        if "\x00" in request.path:
            t.what = f"{user} approve {request.path!r}"
            return t.deny(
                "path", "the path contains a NUL byte", rule="deny:bad-path", reason="invalid path"
            )
        t.parts = normalise(request.path)
        t.what = f"{user} approve /{'/'.join(t.parts)}"
        if user not in self._area_grants:
            return t.deny(
                "user",
                f"{user!r} is not in [users]",
                rule="deny:unknown-user",
                reason="unknown user",
                detail="user not in the policy",
            )
        t.passed("user", f"users.{user}", f"{user} is a user")
        target = self._target(t.parts) if t.parts and t.parts != ("devices",) else None
        if target is None or not target.parts:
            return t.deny(
                "target",
                f"/{'/'.join(t.parts)} names no file in an area or device",
                rule="deny:unknown-target",
                reason="not a file in an area or device",
            )
        t.target, t.grants = target, self._grants_on(user, target)
        t.passed(
            "target",
            f"{target.kind}s.{target.name}",
            f"{target.kind} {target.name} in zone {target.zone}",
        )
        refused = self._granted(t)
        if refused is not None:
            return refused
        assert t.grant is not None
        t.passed("flow", None, "an approval moves no data: no zone or conduit applies")
        return t.allow(t.grant.rule, f"{t.grant.rule} grants approve on {target.name}")
