"""The rename rule: a rename is a read of the old name and a write of the new one.

A rename moves content from one name to another, so it must not let through
what a download and an upload would not: each half is decided as its own
request, with its grant and its conduit rules (patterns, window, size, which is
the file's actual size, and obligations), on top of the ``rename`` grant on
both names. Replacing an existing entry also needs ``delete`` on it.

A folder moves everything below it. Its halves are ``list`` of the old folder
and ``mkdir`` of the new one; and since no decision about the folder can vouch
for what is inside it, renaming a folder is refused wherever a pattern could
tell its contents' old paths from their new ones (a pattern with two or more
components below the target, or a ``**``).

:class:`conduit.policy.engine.Policy` runs the halves, :class:`FolderRenames`
(one of its bases) finds what refuses a rename whose halves pass (another
target, a folder the patterns would judge by its folder names), and
:func:`combine` turns the answers into one :class:`Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass

from conduit.config.model import Op
from conduit.policy.compile import Index
from conduit.policy.decision import Decision, IPAddress, Request, Step
from conduit.policy.patterns import PathPattern, normalise


@dataclass(frozen=True, slots=True)
class Rename:
    """May ``user`` from ``source`` rename ``old`` to ``new``?

    The gateway supplies what only the storage knows: ``size`` (the file's
    actual size), ``folder`` (``old`` is a folder) and ``replaces`` (``new``
    already names something, which the rename would destroy).
    """

    user: str
    source: IPAddress
    old: str
    new: str
    size: int | None = None
    folder: bool = False
    replaces: bool = False

    def request(self) -> Request:
        """The single-path form (the ``rename`` grant on the old name)."""
        return Request(self.user, self.source, Op.RENAME, self.old, self.size)


def halves(rename: Rename) -> list[tuple[str, Request]]:
    """Each question a rename must pass, in the order they are asked."""
    user, source = rename.user, rename.source
    size = None if rename.folder else rename.size
    if rename.folder:
        read = ("list the old folder", Request(user, source, Op.LIST, rename.old))
        write = ("create the new folder", Request(user, source, Op.MKDIR, rename.new))
    else:
        read = ("read the old name", Request(user, source, Op.READ, rename.old, size))
        write = ("write the new name", Request(user, source, Op.WRITE, rename.new, size))
    folder = rename.folder
    items = [
        ("rename the old name", Request(user, source, Op.RENAME, rename.old, folder=folder)),
        ("rename to the new name", Request(user, source, Op.RENAME, rename.new, folder=folder)),
        read,
        write,
    ]
    if rename.replaces:
        items.append(
            ("replace what the new name holds", Request(user, source, Op.DELETE, rename.new))
        )
    return items


def deep_patterns(patterns: list[tuple[PathPattern, int]]) -> list[str]:
    """Patterns that could tell a folder's contents' old paths from their new ones.

    Each comes with the number of leading components that name the target
    (0 for grant patterns, 1 for ``AREA/...`` or 2 for ``devices/NAME/...``
    conduit patterns). A file inside a renamed folder sits at least two
    components below the target, and only its prefix changes: a pattern
    without ``/`` sees the last component only, and an anchored one with
    fewer than two components below the target never matches that deep.
    """
    out = []
    for pattern, prefix in patterns:
        if not pattern.anchored:
            continue
        if len(pattern.parts) - prefix >= 2 or any(p is None for p in pattern.parts):
            out.append(pattern.text)
    return sorted(set(out))


def combine(
    rename: Rename,
    results: list[tuple[str, Decision]],
    refusal: tuple[str, str, str] | None = None,
) -> Decision:
    """One decision from the halves' (``results``, stopped at the first denial).

    ``refusal`` is (rule, client reason, audit reason) when something beyond
    the halves says no (a folder rename under path-scoped patterns, a rename
    across targets).
    """
    what = f"{rename.user} rename {rename.old} -> {rename.new} from {rename.source}"
    first = results[0][1]
    for label, decision in results:
        if not decision.allowed:
            # A hidden half keeps the words of a missing name, unadorned.
            reason = decision.reason if decision.hidden else f"{decision.reason} ({label})"
            return Decision(
                False,
                decision.rule,
                reason,
                f"{what}: {label}: {decision.detail}",
                grant=decision.grant,
                client_zone=decision.client_zone,
                target_zone=decision.target_zone,
                hidden=decision.hidden,
                window_closed=decision.window_closed,
            )
    if refusal is not None:
        rule, reason, why = refusal
        return Decision(
            False,
            rule,
            reason,
            f"{what}: {why}",
            grant=first.grant,
            client_zone=first.client_zone,
            target_zone=first.target_zone,
        )
    write = results[3][1]
    obligations = frozenset().union(*(d.obligations for _, d in results))
    return Decision(
        True,
        write.rule,
        "allowed",
        f"{what}: " + "; ".join(f"{label}: {d.rule}" for label, d in results),
        obligations,
        write.max_size,
        grant=first.grant,
        conduit=write.conduit or results[2][1].conduit,
        client_zone=first.client_zone,
        target_zone=first.target_zone,
    )


class FolderRenames(Index):
    """What refuses a rename whose halves the policy allows: the part of
    :class:`~conduit.policy.engine.Policy` that looks at both names at once."""

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
