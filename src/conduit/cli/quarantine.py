"""``conduit approvals``, ``approve``, ``reject`` and ``quarantine list|show|release|purge``.

These read the gateway's state file (``DATA_DIR/state.sqlite``) and leave
*requests* on an item's row; they never write the journal nor move a file.
The running gateway picks a request up within a second (at its next start if
it is stopped), verifies it against the policy in force, journals it and
carries it out. A decision is signed here with the approver's own SSH key
(``--key``): the approver is the policy user owning that key.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import time
from ipaddress import ip_address
from pathlib import Path

from conduit.cli.check import add_config_argument, console
from conduit.cli.main import CommandError
from conduit.config import ConfigError
from conduit.config.model import Op
from conduit.inspect import approval
from conduit.inspect.items import OPEN, Item, Items, ItemState
from conduit.names import escape
from conduit.policy import Request
from conduit.site.build import Site, build
from conduit.state import STATE_FILE, StateDB


def _items(args: argparse.Namespace) -> tuple[Site, Items]:
    try:
        site = build(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc).splitlines()[0], code=1) from None
    except OSError as exc:
        raise CommandError(f"{args.config}: {exc.strerror}", code=1) from None
    data_dir = site.config.gateway.data_dir
    if not (data_dir / STATE_FILE).exists():
        raise CommandError(f"no quarantine state in {data_dir} (has the gateway run?)", code=1)
    return site, Items(StateDB.open(data_dir))


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(items: list[Item], as_json: bool) -> int:
    if as_json:
        print(json.dumps([i.public() for i in items], indent=2, sort_keys=True))
        return 0
    out = console()
    if not items:
        out.print("no items", markup=False)
        return 0
    for i in items:
        line = (
            f"{i.id}  {i.state:<9} {escape(i.uploader)} from {i.source}  {escape(i.path)}  "
            f"{i.size} bytes  sha256 {i.sha256}  checks {i.checks}  {escape(i.reason)}"
        )
        out.print(line, markup=False)
    return 0


def _get(items: Items, item_id: str) -> Item:
    item = items.get(item_id)
    if item is None:
        raise CommandError(f"no quarantine item {item_id!r}", code=1)
    return item


def run_approvals(args: argparse.Namespace) -> int:
    _, items = _items(args)
    return _table(items.find(*OPEN), args.json)


def run_list(args: argparse.Namespace) -> int:
    _, items = _items(args)
    return _table(items.find(), args.json)


def run_show(args: argparse.Namespace) -> int:
    _, items = _items(args)
    item = _get(items, args.id)
    if args.json:
        print(json.dumps(item.public(), indent=2, sort_keys=True))
        return 0
    out = console()
    for key, value in item.public().items():
        if key in ("created", "updated", "deadline"):
            value = _when(value)
        elif isinstance(value, list | dict):
            value = json.dumps(value, sort_keys=True)
        out.print(f"{key:>15}: {escape(value)}", markup=False)
    return 0


def decide(args: argparse.Namespace, action: str) -> int:
    """Sign a decision with ``--key`` and leave it for the gateway."""
    site, items = _items(args)
    item = _get(items, args.id)
    waiting = (ItemState.HELD, ItemState.EXPIRED) if action == "release" else (ItemState.HELD,)
    if item.state not in waiting:
        raise CommandError(f"{item.id} is {item.state}, not waiting for approval", code=1)
    try:
        signers = site.identity.signers()  # not revoked, not expired
        user = approval.owner(approval.public_blob(args.key), signers)
        if user == item.uploader:
            raise approval.ApprovalError(f"{user} uploaded {item.id} and cannot decide on it")
        decision = site.policy.decide(Request(user, _HOST, Op.APPROVE, item.path))
        if not decision.allowed:
            raise approval.ApprovalError(
                f"{user} may not approve {escape(item.path)}: {decision.reason}"
            )
        verdict = "reject" if action == "reject" else "approve"
        text = approval.message(item.id, item.sha256, verdict)
        signature = approval.sign(args.key, text)
        approval.verify(signature, text, user, signers)
    except approval.ApprovalError as exc:
        raise CommandError(str(exc), code=1) from None
    request = {
        "action": action,
        "by": user,
        "at": time.time(),
        "reason": getattr(args, "reason", None),
        "signature": signature,
    }
    if not items.ask(item.id, request, expect=waiting):
        raise CommandError(f"{item.id} changed meanwhile or has a decision pending", code=1)
    console().print(
        f"{action} of {item.id} (sha256 {item.sha256}) by {user} signed; "
        "the gateway carries it out",
        markup=False,
    )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Check an item's recorded decision against the policy's keys, as anyone
    with the policy can (``ssh-keygen -Y verify`` underneath)."""
    site, items = _items(args)
    item = _get(items, args.id)
    decision = item.decision or {}
    by, signature = decision.get("by"), decision.get("signature")
    if not by or not signature:
        raise CommandError(f"{item.id} has no signed decision", code=1)
    verdict = "reject" if decision.get("action") == "reject" else "approve"
    # the keys as listed, not just today's signers: a key that expired since
    # does not undo a decision it made while it could
    try:
        approval.verify(str(signature), approval.message(item.id, item.sha256, verdict),
                        str(by), site.identity.keys)  # fmt: skip
    except approval.ApprovalError as exc:
        raise CommandError(f"{item.id}: {exc}", code=1) from None
    console().print(
        f"{item.id}: {verdict} of sha256 {item.sha256} signed by {escape(by)}: verifies",
        markup=False,
    )
    return 0


def run_purge(args: argparse.Namespace) -> int:
    _, items = _items(args)
    item = _get(items, args.id)
    if item.state not in (ItemState.REJECTED, ItemState.EXPIRED, ItemState.COMMITTED):
        raise CommandError(f"{item.id} is {item.state}: reject it first", code=1)
    request = {"action": "purge", "by": getpass.getuser(), "at": time.time()}
    if not items.ask(item.id, request, expect=(item.state,)):
        raise CommandError(f"{item.id} changed meanwhile or has a request pending", code=1)
    console().print(f"purge of {item.id} requested; the gateway carries it out", markup=False)
    return 0


#: approvals are decided on the host (the policy ignores the address for them)
_HOST = ip_address("127.0.0.1")


def _common(parser: argparse.ArgumentParser, *, json_flag: bool = False) -> None:
    add_config_argument(parser)
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON")


def _decision(parser: argparse.ArgumentParser, reason: bool = False) -> None:
    parser.add_argument("id", metavar="ID", help="quarantine item id (q-...)")
    parser.add_argument(
        "--key",
        type=Path,
        required=True,
        metavar="PRIVATE_KEY",
        help="your SSH private key; its public key names you in the policy",
    )
    if reason:
        parser.add_argument("--reason", required=True, metavar="TEXT", help="why")
    _common(parser)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "approvals",
        help="list quarantined files waiting for evidence or approval",
        description="Items pending, held for approval, or approved and not yet committed.",
    )
    _common(p, json_flag=True)
    p.set_defaults(handler=run_approvals)

    p = subparsers.add_parser(
        "approve",
        help="approve a held file (signed with your key)",
        description="Sign an approval of item ID's exact SHA-256; the gateway commits it.",
    )
    _decision(p)
    p.set_defaults(handler=lambda a: decide(a, "approve"))

    p = subparsers.add_parser(
        "reject",
        help="reject a held file (signed with your key)",
        description="Sign a rejection of item ID; it stays in quarantine with the reason.",
    )
    _decision(p, reason=True)
    p.set_defaults(handler=lambda a: decide(a, "reject"))

    q = subparsers.add_parser(
        "quarantine",
        help="list, show, release or purge quarantined files",
        description="The quarantine's items, whatever their state.",
    )
    sub = q.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("list", help="every item", description="Every quarantine item.")
    _common(p, json_flag=True)
    p.set_defaults(handler=run_list)
    p = sub.add_parser("show", help="one item in full", description="One item in full.")
    p.add_argument("id", metavar="ID")
    _common(p, json_flag=True)
    p.set_defaults(handler=run_show)
    p = sub.add_parser(
        "release",
        help="approve a held or expired item (needs an approve grant)",
        description="Like approve, also for an item whose approval time passed.",
    )
    _decision(p)
    p.set_defaults(handler=lambda a: decide(a, "release"))
    p = sub.add_parser(
        "verify",
        help="check an item's signed decision against the policy's keys",
        description="Verify the approval or rejection recorded for item ID (ssh-keygen -Y).",
    )
    p.add_argument("id", metavar="ID")
    _common(p)
    p.set_defaults(handler=run_verify)
    p = sub.add_parser(
        "purge",
        help="remove a rejected, expired or committed item's bytes",
        description="Remove the bytes of an item that will never be committed (journalled).",
    )
    p.add_argument("id", metavar="ID")
    _common(p)
    p.set_defaults(handler=run_purge)

    def usage(_: argparse.Namespace) -> int:
        q.print_help()
        return 2

    q.set_defaults(handler=usage)
