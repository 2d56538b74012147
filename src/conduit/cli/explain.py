"""``conduit explain USER OP PATH [NEW] --from IP``: the decision and why (exit 0 allow, 1 deny).

With ``rename PATH NEW`` it shows both halves of the rename rule (see
:mod:`conduit.policy.rename`), each with its own steps.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from ipaddress import ip_address

from rich.console import Console

from conduit.cli.check import add_config_argument, console, load_or_report
from conduit.cli.main import CommandError
from conduit.config.model import Op
from conduit.config.types import parse_size
from conduit.inspect.plan import ENFORCEABLE, Inspector
from conduit.policy import Explanation, Policy, PolicyError, Rename, Request
from conduit.policy.decision import Decision

QUESTIONS = {
    "path": "path",
    "user": "user",
    "zone": "client zone",
    "user networks": "user networks",
    "target": "target",
    "grant": "who may do what where",
    "flow": "may data flow",
    "conduit": "may data flow",
    "obligations": "obligations",
    "folder": "folder",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="show the decision for one request and the rule that made it",
        description="Decide one request as the gateway would. Exit 0: allow, 1: deny.",
    )
    parser.add_argument("user", metavar="USER")
    parser.add_argument("op", metavar="OP", help=f"one of: {', '.join(o.value for o in Op)}")
    parser.add_argument("path", metavar="PATH", help="virtual path, e.g. /firmware/fw-1.2.bin")
    parser.add_argument(
        "new",
        metavar="NEW",
        nargs="?",
        help="for rename: the new name; both halves are shown (read PATH, write NEW)",
    )
    parser.add_argument(
        "--from",
        dest="source",
        metavar="IP",
        help="client address (required, except for approve: decided on the host)",
    )
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="ISO time, e.g. 2026-11-28T03:00 (no offset: gateway time zone; default: now)",
    )
    parser.add_argument("--size", metavar="N", help="file size, e.g. 1048576 or 600MiB")
    parser.add_argument(
        "--replaces", action="store_true", help="rename: NEW already exists (needs delete on it)"
    )
    parser.add_argument("--folder", action="store_true", help="rename: PATH is a folder")
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        op = Op(args.op.lower())
    except ValueError:
        raise CommandError(
            f"unknown operation {args.op!r} (one of: {', '.join(o.value for o in Op)})"
        ) from None
    if args.new is not None and op is not Op.RENAME:
        raise CommandError(f"a second path is only for rename, not {op}")
    if args.new is None and (args.replaces or args.folder):
        raise CommandError("--replaces and --folder describe a rename: give OLD and NEW")
    if args.source is None and op is not Op.APPROVE:
        raise CommandError("--from IP is required (the client's address)")
    try:
        source = ip_address(args.source or "127.0.0.1")
    except ValueError:
        raise CommandError(f"--from: {args.source!r} is not an IP address") from None
    size = None
    if args.size is not None:
        try:
            size = parse_size(args.size)
        except ValueError:
            raise CommandError(
                f"--size: {args.size!r} is not a size like 1048576 or 600MiB"
            ) from None
    out = console()
    config = load_or_report(args.config, out, files=False)
    if config is None:
        return 1
    try:
        policy = Policy(config, enforceable=ENFORCEABLE)
    except PolicyError as exc:
        raise CommandError(str(exc), code=1) from None
    if args.at is not None:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            raise CommandError(
                f"--at: {args.at!r} is not an ISO time like 2026-11-28T03:00"
            ) from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=policy.timezone)
        policy.clock = lambda: at
    path = args.path if args.path.startswith("/") else f"/{args.path}"
    if args.new is not None:
        new = args.new if args.new.startswith("/") else f"/{args.new}"
        facts = Rename(args.user, source, path, new, size, args.folder, args.replaces)
        explanation = policy.explain_rename(facts)
    else:
        explanation = policy.explain(Request(args.user, source, op, path, size))
    render(explanation, policy, out)
    return 0 if explanation.decision.allowed else 1


def _checks(policy: Policy, rule: str | None) -> list[str]:
    """What the conduit that allowed (``conduits[NAME]``) would check on the file."""
    if not rule or not rule.startswith("conduits[") or not rule.endswith("]"):
        return []
    try:
        return Inspector(policy.config).for_conduit(rule[len("conduits[") : -1]).describe()
    except KeyError:
        return []


def _client_sees(decision: Decision, op: Op, on_read: str = "released") -> str:
    """The decision's reason, and where an allowed file with obligations goes:
    to quarantine (an upload) or out only if released from it, or scanned
    first (a download, by the conduit's ``on_read``)."""
    if not (decision.allowed and decision.obligations):
        return str(decision.reason)
    needs = ", ".join(sorted(decision.obligations))
    if op is Op.READ and on_read == "scan":
        return f"{decision.reason}, once these bytes pass {needs} before the first byte goes out"
    if op is Op.READ:
        return f"{decision.reason}, only bytes released from quarantine with {needs}"
    return f"{decision.reason} into quarantine: under its name only once {needs} are met"


def render(explanation: Explanation, policy: Policy, out: Console) -> None:
    """Print the verdict, each step with its rule, and the obligations."""
    request, decision = explanation.request, explanation.decision
    verdict = "[bold green]ALLOW[/]" if decision.allowed else "[bold red]DENY[/]"
    size = f" ({request.size} bytes)" if request.size is not None else ""
    new = f" -> {explanation.new_path}" if explanation.new_path is not None else ""
    out.print(verdict, end=" ")
    out.print(
        f"{request.user} {request.op} {request.path}{new}{size} from {request.source}"
        f" at {explanation.at:%a %Y-%m-%d %H:%M %Z}",
        markup=False,
    )
    part = ""
    for step in explanation.steps:
        if step.part != part:
            part = step.part
            out.print(f"  {part}:", markup=False)
        mark = "ok " if step.ok else "NO "
        rule = f"  [{step.rule}]" if step.rule else ""
        indent = "    " if part else "  "
        out.print(
            f"{indent}{mark} {QUESTIONS.get(step.question, step.question)}: {step.text}{rule}",
            markup=False,
        )
    out.print(f"  rule:        {decision.rule}", markup=False)
    out.print(f"  grant:       {decision.grant or '-'}", markup=False)
    out.print(f"  conduit:     {decision.conduit or '-'}", markup=False)
    obligations = ", ".join(sorted(decision.obligations)) or "none"
    out.print(f"  obligations: {obligations}", markup=False)
    for line in _checks(policy, decision.conduit or decision.rule):
        out.print(f"  check:       {line}", markup=False)
    if decision.max_size is not None:
        out.print(
            f"  max size:    {decision.max_size} bytes (checked while streaming)", markup=False
        )
    named = (decision.conduit or "").removeprefix("conduits[").removesuffix("]")
    on_read = next((c.on_read for c in policy.config.conduits if c.name == named), "released")
    out.print(f"  client sees: {_client_sees(decision, request.op, on_read)}", markup=False)
    out.print(f"  audit:       {decision.detail}", markup=False)
