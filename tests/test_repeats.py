"""The console prints a repeated line once, then how many more came (cli/repeats.py)."""

from __future__ import annotations

import io
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conduit.cli.repeats import RepeatFilter
from tests.support.gateway import conduit_env, policy_text, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def console(
    window: float = 60.0, max_lines: int = 1024
) -> tuple[logging.Logger, io.StringIO, RepeatFilter, Clock]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    clock = Clock()
    repeats = RepeatFilter(handler, window, max_lines=max_lines, clock=clock)
    logger = logging.Logger("conduit.audit.sinks")  # not attached to the root logger
    logger.addHandler(handler)
    return logger, out, repeats, clock


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_line_repeated_every_second_prints_once_then_its_count() -> None:
    log, out, repeats, clock = console()
    for _ in range(60):  # a retry every second for a minute
        log.warning("SIEM sink %s (%s): %s", "siem", "tcp://10.0.0.9:6514", "Connect call failed")
        clock.now += 1
        repeats.flush()
    assert lines(out)[0] == (
        "conduit.audit.sinks WARNING SIEM sink siem (tcp://10.0.0.9:6514): Connect call failed"
    )
    assert lines(out)[1:] == [
        "conduit.audit.sinks WARNING SIEM sink siem (tcp://10.0.0.9:6514): Connect call failed"
        " [repeated 59 more times in the last 60 s]"
    ]
    for _ in range(30):  # still failing: counted in the next window, reported at its end
        log.warning("SIEM sink %s (%s): %s", "siem", "tcp://10.0.0.9:6514", "Connect call failed")
        clock.now += 1
    repeats.flush()
    assert len(lines(out)) == 2
    clock.now += 30
    repeats.flush()
    assert lines(out)[2].endswith("[repeated 30 more times in the last 60 s]")


def test_different_text_level_or_logger_is_not_a_repeat() -> None:
    log, out, repeats, _clock = console()
    log.warning("audit index refresh failed: %s", "disk I/O error")
    log.warning("audit index refresh failed: %s", "database is locked")
    log.error("audit index refresh failed: %s", "disk I/O error")
    other = logging.Logger("conduit.gateway")
    other.addHandler(repeats.handler)
    other.warning("audit index refresh failed: %s", "disk I/O error")
    log.warning("audit index refresh failed: %s", "disk I/O error")  # the one repeat
    assert len(lines(out)) == 4
    repeats.flush(final=True)
    assert lines(out)[4] == (
        "conduit.audit.sinks WARNING audit index refresh failed: disk I/O error"
        " [repeated 1 more time in the last 1 s]"
    )


def test_a_line_that_stopped_repeating_prints_again_at_once() -> None:
    log, out, repeats, clock = console()
    log.warning("journal writable again")
    clock.now += 61
    repeats.flush()  # nothing was counted: forgotten
    log.warning("journal writable again")
    assert lines(out) == ["conduit.audit.sinks WARNING journal writable again"] * 2


def test_a_count_is_reported_before_the_next_window_even_without_flush() -> None:
    log, out, _repeats, clock = console()
    for _ in range(3):
        log.warning("SIEM sink down")
    clock.now += 61
    log.warning("SIEM sink down")
    assert lines(out) == [
        "conduit.audit.sinks WARNING SIEM sink down",
        "conduit.audit.sinks WARNING SIEM sink down [repeated 2 more times in the last 61 s]",
        "conduit.audit.sinks WARNING SIEM sink down",
    ]


def test_memory_is_bounded_and_counts_survive_eviction() -> None:
    log, out, repeats, _clock = console(max_lines=10)
    log.warning("first")
    log.warning("first")
    for i in range(1000):
        log.warning("line %d", i)
    assert len(repeats._seen) == 10
    text = out.getvalue()
    assert "first [repeated 1 more time" in text and text.count("\n") == 1002


def test_serve_console_does_not_repeat_an_unreachable_siem(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    """A real `conduit serve` with a SIEM on a closed port: the sink retries (0.2, 0.4,
    0.8, 1.6 s ... apart) and warns each time; the console shows one line and, at
    exit, how many more there were."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    config = tmp_path / "conduit.toml"
    config.write_text(
        policy_text(tmp_path, keys).replace(
            "[zones.local]", f'[[audit.siem]]\ntarget = "tcp://127.0.0.1:{port}"\n\n[zones.local]'
        )
    )
    log = tmp_path / "console.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "conduit", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=conduit_env(),
        )
    try:
        assert wait_for(lambda: "SIEM sink" in log.read_text(), timeout=20)
        time.sleep(3.5)  # not an assertion: room for four more retries, counted below
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    sink_lines = [x for x in log.read_text().splitlines() if "SIEM sink" in x and "WARNING" in x]
    assert len(sink_lines) == 2, sink_lines
    assert "repeated" not in sink_lines[0] and "Connect call failed" in sink_lines[0]
    assert " [repeated " in sink_lines[1]
    count = int(sink_lines[1].split(" [repeated ")[1].split()[0])
    assert count >= 3
