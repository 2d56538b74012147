"""``conduit`` command line: a thin dispatcher over one module per command.

Each command module exposes ``register(subparsers)``, which adds its parser
and sets ``handler`` to a function ``(args) -> int`` (the exit code). User
mistakes surface as :class:`CommandError` and print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from conduit import __version__

# One module per command, in the order ``--help`` lists them.
COMMANDS = [
    "serve",
    "init",
    "check",
    "explain",
    "reload",
    "audit",
    "quarantine",
    "user",
    "defender",
    "cp",
    "sync",
    "inventory",
    "fleet",
]


class CommandError(Exception):
    """A user mistake or an environment problem: print the message, exit ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conduit",
        description="Secure SCP/SFTP gateway for OT networks: zones, conduits, audit.",
    )
    parser.add_argument("--version", action="version", version=f"conduit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"conduit.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except CommandError as exc:
        print(f"conduit: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
