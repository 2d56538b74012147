"""Shared fixtures: client keys and a running gateway driven by real OpenSSH clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conduit.config import parse
from tests.support.gateway import RunningGateway, make_key, policy_text, start_gateway, stop_gateway


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: make_key(folder, name) for name in ("alice", "bob", "mallory")}


@pytest.fixture
def make_gateway(tmp_path: Path, keys: dict[str, Path]) -> Iterator[Callable[..., RunningGateway]]:
    started: list[RunningGateway] = []

    def make(extra: str = "", recorder: Any = None, text: str | None = None) -> RunningGateway:
        root = tmp_path / f"gw{len(started)}"
        root.mkdir()
        config = parse(text or policy_text(root, keys, extra), source=root / "conduit.toml")
        running = start_gateway(config, keys, root, recorder)
        started.append(running)
        return running

    yield make
    for running in started:
        stop_gateway(running)


@pytest.fixture
def gw(make_gateway: Callable[..., RunningGateway]) -> RunningGateway:
    return make_gateway()


@pytest.fixture(params=["sftp", "scp"], ids=["sftp-mode", "legacy-scp"])
def legacy(request: pytest.FixtureRequest) -> bool:
    """Parametrise a test over OpenSSH scp's two protocols (as regress/scp.sh does)."""
    return request.param == "scp"
