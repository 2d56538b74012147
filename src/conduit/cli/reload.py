"""``conduit reload``: check the policy file, then have the running gateway reload it.

The policy is validated here first so a typo is reported to the person who
made it. Key files, password variables and folders are left to the gateway,
which checks them as ``check`` does but with its own user and environment
(a ``password_env`` set only for the gateway's service is not an error). The
gateway is then asked over its control socket
(``DATA_DIR/control.sock``, owner only) and its answer is printed: the exit
status is 0 only when the gateway applied the new policy. A file that passes
here and that the gateway still cannot serve is reported with the gateway's
reason (it keeps the policy in force). SIGHUP still reloads too, but cannot
say how it went.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from conduit.cli.check import add_config_argument, console, load_or_report
from conduit.cli.main import CommandError
from conduit.gateway.control import ask, socket_path
from conduit.names import escape

DEFAULT_TIMEOUT = 60.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reload",
        help="validate the policy, then make the running gateway reload it",
        description="Validate the policy file; if good, ask the running gateway to reload it "
        "and print what it did (exit 0 only if the new policy is in force).",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the gateway's answer (default {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = console()
    config = load_or_report(args.config, out, files=False)
    if config is None:
        out.print("not reloaded: the running gateway keeps its current policy", markup=False)
        return 1
    data = Path(config.gateway.data_dir)
    control = socket_path(data)
    try:
        answer = ask(control, "reload", args.timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        raise CommandError(
            f"no gateway runs (nothing answers on {control}; start one with `conduit serve`)",
            code=1,
        ) from None
    except PermissionError:
        raise CommandError(
            f"not allowed to talk to the gateway ({control} is its owner's only)", code=1
        ) from None
    except TimeoutError:
        raise CommandError(
            f"the gateway did not answer within {args.timeout:g} s: whether it reloaded is "
            "unknown (look for policy.reload in the journal)",
            code=1,
        ) from None
    except (OSError, ValueError) as exc:
        raise CommandError(f"no usable answer from the gateway: {exc}", code=1) from None
    return report(args.config, answer, out)


def report(path: Path, answer: dict[str, Any], out: Any) -> int:
    """Print the gateway's answer; 0 if it applied the new policy."""
    if answer.get("ok") is not True:
        error = escape(str(answer.get("error") or "no reason given"))
        out.print(f"{path}: NOT reloaded by the gateway: {error}", markup=False)
        out.print("the gateway keeps its current policy", markup=False)
        return 1
    out.print(f"{path}: reloaded; the new policy is in force", markup=False)
    revoked = answer.get("revoked_sessions") or []
    for session in revoked if isinstance(revoked, list) else []:
        if isinstance(session, dict):
            who = escape(str(session.get("principal", "?")))
            why = escape(str(session.get("reason", "")))
            out.print(
                f"  revoked session {escape(str(session.get('session')))} ({who}): {why}",
                markup=False,
            )
    closed = answer.get("devices_closed") or []
    if isinstance(closed, list) and closed:
        out.print(
            f"  closed relay connections: {', '.join(escape(str(n)) for n in closed)}", markup=False
        )
    return 0
