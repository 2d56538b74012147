"""Real parts for the inspection tests: one clamd for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.clamd import Clamd, available, start_clamd, stop_clamd


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    if not available():
        pytest.fail("clamd is missing: apt-get install clamav-daemon (see .ci/run)")
    running = start_clamd(tmp_path_factory.mktemp("clamd"))
    yield running
    stop_clamd(running)
