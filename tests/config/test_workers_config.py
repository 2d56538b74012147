"""``[gateway] workers``: what the file may say, and what it may not combine with yet."""

from __future__ import annotations

import os

import pytest

from conduit.config import ConfigError
from conduit.config.load import parse


@pytest.mark.parametrize("value", ["0", "-1", "257", '"many"', "2.5"])
def test_a_worker_count_that_is_not_one_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"[gateway]\nworkers = {value}\n")
    assert "workers" in str(caught.value)


def test_worker_counts() -> None:
    assert parse("").gateway.worker_count == 1  # the default: one process
    assert parse("[gateway]\nworkers = 3\n").gateway.worker_count == 3
    auto = parse('[gateway]\nworkers = "auto"\n').gateway.worker_count
    assert auto == len(os.sched_getaffinity(0))


DEVICE = """
[devices.plc]
zone = "control"
address = "10.0.0.5:22"
user = "root"
identity = "/k"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
"""


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (DEVICE, "devices"),
        ('[[conduits]]\nname = "c"\nfrom = "a"\nto = "b"\nrequire = ["scan"]\n', "quarantine"),
        ('[[conduits]]\nname = "c"\nfrom = "a"\nto = "b"\ntypes = ["text/plain"]\n', "quarantine"),
    ],
)
def test_workers_refuse_what_they_cannot_serve_yet(extra: str, says: str) -> None:
    for workers in ("2", '"auto"'):
        with pytest.raises(ConfigError) as caught:
            parse(f"[gateway]\nworkers = {workers}\n{extra}")
        assert says in str(caught.value) and "workers = 1" in str(caught.value)
    parse(f"[gateway]\nworkers = 1\n{extra}")  # one process serves them, as before
