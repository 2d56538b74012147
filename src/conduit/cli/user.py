"""``conduit user totp NAME``: enrol a user for the TOTP second factor.

Generates a secret, journals the enrolment (``auth.totp_enrol``: who, by whom,
whether it replaced an earlier secret; never the secret), stores the secret
sealed (see :mod:`conduit.auth.secrets`), then prints the ``otpauth://`` URI
and a QR code for an authenticator app. The journal comes first, as for every
change the gateway makes: a running gateway holds the journal, so it is asked
to write the record over its control socket; with no gateway running, the
journal is opened here. If neither works nothing is enrolled.

The secret is shown once, on this terminal, to the person enrolling; it is
in no log line and no record.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

import segno

from conduit.audit import Auditor
from conduit.audit.events import EventType
from conduit.audit.journal import JournalBusy
from conduit.auth import totp
from conduit.auth.secrets import SecretStore, SecretStoreError, new_secret
from conduit.cli.check import add_config_argument, console, load_or_report
from conduit.cli.main import CommandError
from conduit.config import Config
from conduit.errors import AuditUnavailable
from conduit.gateway.control import ask, socket_path
from conduit.names import escape

CONTROL_TIMEOUT = 30.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "user",
        help="a user's second factor (TOTP enrolment)",
        description="Manage what users need to log in beyond their keys.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    enrol = actions.add_parser(
        "totp",
        help="enrol NAME for TOTP: print the otpauth:// URI and a QR code",
        description="Give NAME a new TOTP secret (replacing any earlier one; journalled), "
        "stored encrypted in the data folder, and print the otpauth:// URI and a QR code "
        "for an authenticator app. Whom the gateway asks for a code is [auth.second_factor].",
    )
    enrol.add_argument("name", metavar="NAME", help="a user of the policy ([users.NAME])")
    add_config_argument(enrol)
    enrol.set_defaults(handler=run_totp)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=usage)


def run_totp(args: argparse.Namespace) -> int:
    out = console()
    config = load_or_report(args.config, out, files=False)
    if config is None:
        return 1
    name: str = args.name
    if name not in config.users:
        raise CommandError(
            f"unknown user {escape(name)!r}: no [users.{escape(name)}] in {args.config}"
        )
    data = config.gateway.data_dir
    try:
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = SecretStore.open(data)
    except OSError as exc:
        raise CommandError(f"cannot open the state in {data}: {exc.strerror or exc}", 1) from None
    try:
        store.ready()
        replaced = store.enrolled(name)
        secret = new_secret()
        journal(config, totp.enrol_event(name, replaced, _operator()))
        store.enrol(name, secret)
    except SecretStoreError as exc:
        raise CommandError(f"not enrolled: {exc}", 1) from None
    finally:
        store.close()
    show(name, secret, config.gateway.node, replaced)
    return 0


def journal(config: Config, fields: dict[str, Any]) -> None:
    """Journal the enrolment through the running gateway, or directly if none runs."""
    control = socket_path(config.gateway.data_dir)
    try:
        answer = ask(
            control,
            "totp-enrolled",
            CONTROL_TIMEOUT,
            user=fields["principal"],
            replaced=fields["replaced"],
            operator=fields["operator"],
        )
    except (FileNotFoundError, ConnectionRefusedError):
        answer = None  # no gateway: the journal is free
    except (OSError, ValueError) as exc:
        raise CommandError(f"not enrolled: the gateway did not journal it ({exc})", 1) from None
    if answer is not None:
        if answer.get("ok") is not True:
            error = escape(str(answer.get("error") or "no reason given"))
            raise CommandError(f"not enrolled: the gateway refused to journal it: {error}", 1)
        return
    try:
        asyncio.run(_journal_directly(config, fields))
    except JournalBusy as exc:
        raise CommandError(
            f"not enrolled: {exc} and its control socket does not answer", 1
        ) from None
    except AuditUnavailable as exc:  # it names the journal and why
        raise CommandError(f"not enrolled: {exc}", 1) from None
    except OSError as exc:
        raise CommandError(f"not enrolled: the audit journal cannot be written: {exc}", 1) from None


async def _journal_directly(config: Config, fields: dict[str, Any]) -> None:
    gw = config.gateway
    auditor = await Auditor.open(config.audit, node=gw.node, key_dir=gw.data_dir)
    try:
        await auditor.record(EventType.AUTH_TOTP_ENROL, "success", **fields)
    finally:
        await auditor.close()


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        import os

        return f"uid {os.getuid()}"


def show(name: str, secret: str, node: str, replaced: bool) -> None:
    uri = totp.provisioning_uri(secret, name, node)
    out = sys.stdout
    what = "replaced: codes from the earlier secret no longer work" if replaced else "enrolled"
    print(f"TOTP for {escape(name)} {what}.", file=out)
    print("Scan this with an authenticator app (or enter the secret by hand):\n", file=out)
    try:
        segno.make(uri, error="m").terminal(out=out, compact=True)
    except UnicodeEncodeError:
        print("(no QR code: this terminal cannot draw one; use the URI)", file=out)
    groups = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    print(f"\n  URI     {uri}\n  secret  {groups}", file=out)
    print(
        f"  type    time-based, {totp.DIGITS} digits, every {totp.STEP} s, SHA-1\n"
        f"\nThe secret is shown only now; run this command again to replace it.",
        file=out,
    )
