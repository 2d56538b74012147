"""Relay paths obey the one name rule before anything reaches a device."""

from __future__ import annotations

import pytest

from conduit.errors import Fault, StorageError
from conduit.storage.relay.scp import parse_listing
from conduit.storage.relay.sftp import remote_path


@pytest.mark.parametrize(
    "path",
    [
        ("ok", "esc\x1b[31m.txt"),
        ("rlo\u202etxt.exe",),
        ("cr\rx",),
        ("..",),
        ("a/b",),
        ("d" * 256,),
        tuple(["d" * 200] * 21),
    ],
)
def test_remote_path_refuses_what_the_rule_refuses(path: tuple[str, ...]) -> None:
    with pytest.raises(StorageError) as caught:
        remote_path("/etc/device", path)
    assert caught.value.fault is Fault.FORBIDDEN


def test_remote_path_builds_valid_paths() -> None:
    assert remote_path("/etc/device", ("cfg", "fw 1.bin")) == "/etc/device/cfg/fw 1.bin"
    assert remote_path("/", ()) == "/"


def test_device_listing_hides_names_no_operation_could_reach() -> None:
    output = (
        b"f 5 1700000000.0 good.txt\0f 1 1.0 esc\x1b[2J\0d 0 1.0 rlo\xe2\x80\xae\0f 1 1.0 \xff\0"
    )
    assert [e.name for e in parse_listing(output)] == ["good.txt"]
