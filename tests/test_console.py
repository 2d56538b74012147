"""The `serve` console log: one record, one line, whatever a client put in it."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from conduit.cli.serve import ConsoleFormatter
from conduit.names import has_controls
from tests.support.gateway import conduit_env, policy_text, wait_for

FORGED = "2026-12-02 00:00:00,000 conduit.audit INFO #99 file.upload success"


def _format(message: str, *args: object) -> str:
    record = logging.LogRecord("asyncssh", logging.INFO, __file__, 1, message, args, None)
    return ConsoleFormatter("%(name)s %(levelname)s %(message)s").format(record)


@pytest.mark.parametrize(
    "hostile",
    [
        f"scp -t /inbox\n{FORGED}",
        f"scp -t /inbox\r{FORGED}",
        "scp -t /inbox/\x1b[2J\x1b[31mred",
        "scp -t /inbox/invoice\u202etxt.exe",
        "c1 \x9b31m and mark \u200f",
    ],
)
def test_formatter_keeps_one_line_and_escapes(hostile: str) -> None:
    line = _format("  Command: %s", hostile)
    assert "\n" not in line and not has_controls(line)
    assert line.startswith("asyncssh INFO   Command: scp") or "c1" in line


def test_formatter_escapes_inside_tracebacks_but_keeps_their_lines() -> None:
    try:
        raise ValueError(f"bad name\n{FORGED}\x1b[31m")
    except ValueError:
        record = logging.LogRecord(
            "conduit", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    text = ConsoleFormatter("%(message)s").format(record)
    lines = text.splitlines()
    assert lines[0] == "failed" and lines[1].startswith("Traceback")
    assert not any(line.startswith(FORGED) for line in lines)
    assert not has_controls(text.replace("\n", ""))


def test_serve_verbose_console_cannot_be_forged(keys: dict[str, Path], tmp_path: Path) -> None:
    """asyncssh logs exec commands at INFO: with -v they must arrive escaped."""
    config = tmp_path / "conduit.toml"
    config.write_text(policy_text(tmp_path, keys))
    log = tmp_path / "console.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "conduit", "serve", "-v", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=conduit_env(),
        )
    try:
        assert process.stdout is not None
        port = 0
        for line in process.stdout:
            if line.startswith("Conduit gateway listening on"):
                port = int(line.rsplit(":", 1)[1])
                break
        assert port

        async def attack() -> None:
            async with asyncssh.connect(
                "127.0.0.1",
                port,
                username="alice",
                client_keys=[str(keys["alice"])],
                known_hosts=None,
                agent_path=None,
            ) as conn:
                for command in (
                    f"scp -t /inbox\n{FORGED}",
                    "scp -t /inbox/\x1b]0;pwned\x07 invoice\u202etxt.exe",
                ):
                    process = await conn.create_process(command, encoding=None)
                    await process.wait(timeout=20)

        import asyncio

        asyncio.run(attack())
        assert wait_for(lambda: "pwned" in log.read_text(errors="replace"), timeout=20)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    text = log.read_text(encoding="utf-8")
    assert "Command: scp -t /inbox\\x0a2026-12-02" in text  # asyncssh's line, escaped
    assert not any(line.startswith(FORGED) for line in text.splitlines())
    assert not has_controls(text.replace("\n", "")), [
        line for line in text.splitlines() if has_controls(line)
    ]
