"""The test devices' sshd starts even when the port it picked is taken before it binds."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import sshd as harness


def test_a_port_taken_before_sshd_binds_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another server takes the first port handed out, between the check and the bind.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports: Iterator[int] = iter([taken.getsockname()[1]])
    real = harness.free_port
    monkeypatch.setattr(harness, "free_port", lambda: next(ports, None) or real())
    try:
        device = harness.start_sshd(tmp_path / "d", client_keys=[], sftp=True)
        try:
            assert device.port != taken.getsockname()[1]
            assert (tmp_path / "d" / "sshd.pid").read_text().strip() == str(device.process.pid)
        finally:
            device.stop()
    finally:
        taken.close()
