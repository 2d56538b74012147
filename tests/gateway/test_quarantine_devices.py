"""A quarantined file for a device is relayed to it only once approved: real
sshd devices (SFTP and legacy SCP), real scp, the relay's custody check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conduit.inspect import approval
from conduit.inspect.items import Items, ItemState
from conduit.state import StateDB
from tests.gateway import test_devices
from tests.gateway.test_devices import Fleet, fleet_policy
from tests.support.gateway import RunningGateway, random_file, sha256, wait_for

fleet = test_devices.fleet  # the sshd devices, as a fixture of this module too
TO_PLCS = 'paths = ["*.bin", "*.cfg", "*id*", "*touch*"]'
RELEASE = '[roles.release]\ngrants = [{ target = "devices/plc-*", ops = ["approve"] }]\n\n'


@pytest.fixture
def relay(make_gateway, keys: dict[str, Path], fleet: Fleet, tmp_path: Path) -> RunningGateway:  # type: ignore[no-untyped-def]
    root = tmp_path / "relay"
    root.mkdir()
    for device_root in fleet.roots.values():
        for entry in device_root.iterdir():
            entry.unlink()
    text = fleet_policy(root, keys, fleet)
    text = text.replace(TO_PLCS, 'paths = ["*.bin"]\nrequire = ["approval"]')
    text = text.replace("[users.bob]", RELEASE + "[users.bob]")
    text = text.replace("roles = []", 'roles = ["release"]')
    return make_gateway(text=text)  # type: ignore[no-any-return]


@pytest.mark.parametrize("device", ["plc-sftp", "plc-scp"])
def test_an_approved_file_is_relayed_to_its_device(
    relay: RunningGateway, fleet: Fleet, keys: dict[str, Path], device: str, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "fw.bin", 300_000)
    done = relay.scp(str(src), f":/devices/{device}/fw.bin", legacy=True)
    assert done.returncode == 0, done.stderr
    assert os.listdir(fleet.roots[device]) == []  # held: nothing on the device
    items = Items(StateDB.open(relay.config.gateway.data_dir))  # the test's own connection
    (item,) = items.find(path=f"/devices/{device}/fw.bin")
    assert item.state is ItemState.HELD and item.target_kind == "device"
    text = approval.message(item.id, item.sha256, "approve")
    signed = {"action": "approve", "by": "bob", "signature": approval.sign(keys["bob"], text)}
    assert items.ask(item.id, signed, expect=(ItemState.HELD,))
    relay.call(relay.gateway.keeper.tick())
    assert wait_for(lambda: items.get(item.id).state is ItemState.COMMITTED)  # type: ignore[union-attr]
    assert sha256(fleet.roots[device] / "fw.bin") == sha256(src)
    assert os.listdir(fleet.roots[device]) == ["fw.bin"]  # no temp file left on the device
    (commit,) = relay.recorder.of("file.commit", "success")
    assert commit["device"] == device and commit["quarantine"] == item.id
