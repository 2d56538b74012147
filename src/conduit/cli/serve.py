"""``conduit serve``: run the gateway (a policy file, or the embedded default)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import shlex
import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from conduit.cli.main import CommandError
from conduit.cli.repeats import RepeatFilter
from conduit.config import Config, ConfigError, embedded, local_public_keys
from conduit.config.model import GatewayConfig
from conduit.names import escape
from conduit.site.build import inspect

DEFAULT_CONFIG = Path("conduit.toml")
#: How often the console reports the count of a line it stopped repeating.
REPEAT_FLUSH_INTERVAL = 5.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Without --config and without ./conduit.toml, serve the "
        "embedded default: /inbox and /outbox on 127.0.0.1:2222 for your ~/.ssh keys.",
    )
    parser.add_argument("--config", type=Path, help="policy file (default: ./conduit.toml)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="override gateway.listen")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every event")
    parser.set_defaults(handler=run)


def choose_config(path: Path | None, listen: str | None) -> tuple[Config, bool]:
    """The config to serve and whether it is the embedded default."""
    if path is None and not DEFAULT_CONFIG.exists():
        keys = local_public_keys()
        if not keys:
            raise CommandError(
                "no public key in ~/.ssh, so nobody could log in to the embedded default.\n"
                "  Make one with:  ssh-keygen -t ed25519\n"
                "  then run `conduit serve` again.",
                code=1,
            )
        config = embedded(Path.cwd(), keys=keys, listen=listen or "127.0.0.1:2222")
        return config, True
    config = checked(path or DEFAULT_CONFIG)
    if listen:
        try:
            gateway = GatewayConfig.model_validate(
                {**config.gateway.model_dump(), "listen": listen}
            )
        except ValueError:
            raise CommandError(f"--listen {listen!r}: must be HOST:PORT", code=2) from None
        config = config.model_copy(update={"gateway": gateway})
    return config, False


def checked(path: Path) -> Config:
    """The policy in ``path``, built as ``conduit check`` builds it.

    Every problem is printed as ``check`` prints it (file, line, key, one
    line each); any error stops here, before a folder is made or a port
    opened, with exit code 1.
    """
    report = inspect(path)
    for line in report.lines:
        print(f"{path}: {line}", file=sys.stderr)
    if report.site is None:
        count = len(report.errors)
        raise CommandError(
            f"{path}: {count} error{'s' if count != 1 else ''}; the policy is not usable,"
            " the gateway did not start",
            code=1,
        )
    return report.site.config


def conduit_command(argv0: str | None = None, path: str | None = None) -> str:
    """How to run ``conduit`` again from a shell: ``conduit`` if ``PATH`` finds this
    program, else its full path (``./scripts/serve`` runs ``.venv/bin/conduit``,
    which is on nobody's ``PATH`` until the venv is activated)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if os.path.basename(argv0) != "conduit":
        return "conduit"  # python -m conduit, or an embedding program
    found = shutil.which("conduit", path=path)
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return "conduit"
    return shlex.quote(os.path.abspath(argv0))


def banner(config: Config, port: int, fingerprint: str, demo: bool) -> str:
    host = config.gateway.listen.rpartition(":")[0].strip("[]")
    target = f"[{host}]" if ":" in host else host
    user = getpass.getuser() if demo else "USER"
    area = "inbox" if "inbox" in config.areas else next(iter(config.areas), "AREA")
    lines = [
        f"Conduit gateway listening on {host}:{port}",
        f"  host key {fingerprint}",
        f"  policy   {config.source or 'embedded default (loopback demo)'}",
        f"  data     {config.gateway.data_dir}",
        "",
        "Try it (the first connection asks you to confirm the host key above):",
        f"  scp -P {port} FILE {user}@{target}:/{area}/",
        f"  scp -O -P {port} FILE {user}@{target}:/{area}/",
        f"  sftp -P {port} {user}@{target}",
        "Watch every event as it is journalled (or run serve with -v):",
        f"  {conduit_command()} audit tail -f "
        + (f"--config {config.source}" if config.source else f"--journal {config.audit.journal}"),
    ]
    return "\n".join(lines)


class ConsoleFormatter(logging.Formatter):
    """One log record, one console line, whatever a client managed to put in it.

    asyncssh logs an exec request's command at INFO (``  Command: ...``), and
    user names, paths and peer error texts reach our own messages, so with
    ``-v`` an authenticated user could end a line and forge the next one
    (``\n2026-... conduit.audit INFO #12 file.upload success``) or recolour
    and reorder it (ESC, U+202E). Escaping at the console's formatter covers
    every logger, ours and the libraries', at every level, instead of
    trusting each call site; lowering asyncssh's logger instead would hide
    its useful chatter and still leave our own messages to chance.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        # A frame keeps its two lines (our code); an exception's message is
        # escaped whole, since it may quote what a client sent.
        out = []
        for part in traceback.format_exception(*ei):
            body = part.rstrip("\n")
            if part.startswith("  File "):
                out.append("\n".join(escape(line) for line in body.split("\n")))
            else:
                out.append(escape(body))
        return "\n".join(out)


def setup_console(verbose: bool) -> RepeatFilter:
    """The console log: WARNING (INFO with ``-v``), every line escaped, repeats counted."""
    handler = logging.StreamHandler()
    handler.setFormatter(ConsoleFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    repeats = RepeatFilter(handler)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    return repeats


def run(args: argparse.Namespace) -> int:
    config, demo = choose_config(args.config, args.listen)
    from conduit.gateway.process import tune_malloc

    tune_malloc()  # once, before the gateway allocates anything big
    repeats = setup_console(args.verbose)
    # Sessions, refusals, failed transfers and alerts are always shown; -v adds
    # every successful file operation (path, bytes, SHA-256, duration) and the
    # gateway's and asyncssh's own chatter.
    logging.getLogger("conduit.audit").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    from conduit.audit.journal import JournalBusy
    from conduit.gateway import ListenError

    try:
        asyncio.run(_serve(config, demo, repeats))
    except (ListenError, JournalBusy) as exc:
        raise CommandError(str(exc), 1) from None
    except OSError as exc:  # a data folder, key or journal the gateway cannot use
        where = f"{exc.filename}: " if exc.filename else ""
        raise CommandError(f"cannot start: {where}{exc.strerror or exc}", 1) from None
    except ConfigError as exc:
        raise CommandError(str(exc), code=1) from None
    finally:
        repeats.flush(final=True)
    return 0


async def _report_repeats(repeats: RepeatFilter) -> None:
    while True:
        await asyncio.sleep(REPEAT_FLUSH_INTERVAL)
        repeats.flush()


async def _serve(config: Config, demo: bool, repeats: RepeatFilter) -> None:
    from conduit.gateway import Gateway

    if config.gateway.worker_count > 1 and not demo:
        from conduit.gateway.workers import Supervisor

        gateway: Gateway = Supervisor(config)  # worker processes (workers.py)
    else:
        gateway = Gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    if not demo:
        gateway.install_reload_signal()
        await gateway.start_control()
    print(banner(config, gateway.port, gateway.fingerprint, demo), flush=True)
    reporter = asyncio.create_task(_report_repeats(repeats))
    try:
        await stop.wait()
    finally:
        reporter.cancel()
        await gateway.stop()
