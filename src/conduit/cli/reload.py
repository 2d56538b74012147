"""``conduit reload``: check the policy file, then tell the running gateway to reload it.

The file is validated here first so a typo is reported to the person who
made it; the gateway validates again on SIGHUP and keeps the last good
policy if the new one is unusable.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from conduit.cli.check import add_config_argument, console, load_or_report
from conduit.cli.main import CommandError

PID_FILE = "gateway.pid"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reload",
        help="validate the policy, then make the running gateway reload it (SIGHUP)",
        description="Validate the policy file; if good, send SIGHUP to the running gateway.",
    )
    add_config_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = console()
    config = load_or_report(args.config, out)
    if config is None:
        out.print("not reloaded: the running gateway keeps its current policy", markup=False)
        return 1
    pid_file = Path(config.gateway.data_dir) / PID_FILE
    pid = gateway_pid(pid_file)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise CommandError(f"no gateway runs (stale pid {pid} in {pid_file})", code=1) from None
    except PermissionError:
        raise CommandError(f"not allowed to signal the gateway (pid {pid})", code=1) from None
    out.print(f"{args.config}: OK; sent SIGHUP to the gateway (pid {pid})", markup=False)
    return 0


def gateway_pid(pid_file: Path) -> int:
    """The gateway's pid from ``pid_file``, checked to be a live conduit process."""
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise CommandError(
            f"no gateway runs (no {pid_file}; start one with `conduit serve`)", code=1
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {pid_file}: {exc.__class__.__name__}", code=1) from None
    if not text.isdigit() or int(text) <= 1:
        raise CommandError(f"{pid_file} does not hold a process id", code=1)
    pid = int(text)
    # A stale pid file may name a reused pid: on Linux, make sure it is ours.
    cmdline = Path(f"/proc/{pid}/cmdline")
    if sys.platform.startswith("linux"):
        try:
            command = cmdline.read_bytes()
        except FileNotFoundError:
            raise CommandError(f"no gateway runs (stale pid {pid} in {pid_file})", code=1) from None
        except OSError:
            command = b"conduit"
        if b"conduit" not in command:
            raise CommandError(
                f"no gateway runs (pid {pid} in {pid_file} is another program)", code=1
            )
    return pid
