"""The client through a real Conduit gateway: its temp-then-rename upload passes the
gateway's policy, and the gateway records the transfer with the same SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from conduit.client import Client, ClientError
from tests.support.gateway import RunningGateway


def client_for(gw: RunningGateway, user: str = "alice") -> Client:
    return Client(
        "127.0.0.1",
        port=gw.port,
        user=user,
        identity=gw.keys[user],
        known_hosts=gw.known_hosts,
        ssh_config=(),
        agent_path=None,
    )


async def test_put_and_get_through_the_gateway(gw: RunningGateway, tmp_path: Path) -> None:
    source = tmp_path / "fw.bin"
    source.write_bytes(os.urandom(1 << 20))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    async with client_for(gw) as client:
        [sent] = await client.put(source, "/inbox/", verify=True)
        [again] = await client.put(source, "/inbox/fw.bin")  # replaces: alice may delete
        [got] = await client.get("/inbox/fw.bin", tmp_path / "back.bin", verify=True)
    assert sent.sha256 == again.sha256 == got.sha256 == digest
    assert sorted(p.name for p in gw.area("inbox").iterdir()) == ["fw.bin"]
    uploads = [e for e in gw.recorder.of("file.upload", "success") if "fw.bin" in str(e)]
    assert uploads and all(digest in str(e) for e in uploads)


async def test_a_refused_upload_leaves_no_temp_and_says_permission_denied(
    gw: RunningGateway, tmp_path: Path
) -> None:
    source = tmp_path / "x.bin"
    source.write_bytes(b"nope")
    async with client_for(gw) as client:
        with pytest.raises(ClientError, match=r"permission denied|no such file"):
            await client.put(source, "/outbox/x.bin")
    assert list(gw.area("outbox").iterdir()) == []


async def test_a_write_only_drop_folder_takes_the_upload_with_nothing_left(
    gw: RunningGateway, tmp_path: Path
) -> None:
    """bob may only write to /inbox: a client-side temp name could be neither renamed
    nor removed there, so through a gateway the client leaves atomicity to it."""
    source = tmp_path / "drop.bin"
    source.write_bytes(os.urandom(50_000))
    async with client_for(gw, "bob") as client:
        assert client.gateway
        [sent] = await client.put(source, "/inbox/drop.bin")
    assert sorted(p.name for p in gw.area("inbox").iterdir()) == ["drop.bin"]
    assert sent.sha256 == hashlib.sha256((gw.area("inbox") / "drop.bin").read_bytes()).hexdigest()


def test_a_fleet_push_through_the_gateway_is_journalled(
    gw: RunningGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two inventory devices that are the same gateway (as two users): the push lands
    in its area, each receipt's SHA-256 is the one the gateway journalled."""
    from conduit.cli.main import main

    (tmp_path / "fw.bin").write_bytes(os.urandom(100_000))
    digest = hashlib.sha256((tmp_path / "fw.bin").read_bytes()).hexdigest()
    (tmp_path / "inventory.toml").write_text(
        f'[defaults]\nknown_hosts = "{gw.known_hosts}"\n'
        + "".join(
            f'[devices.{name}]\naddress = "127.0.0.1:{gw.port}"\nuser = "{user}"\n'
            f'identity = "{gw.keys[user]}"\ngroups = ["gw"]\n'
            for name, user in (("as-alice", "alice"), ("as-bob", "bob"))
        )
    )  # fmt: skip
    (tmp_path / "job.toml").write_text(
        'inventory = "inventory.toml"\nkind = "push"\ntargets = ["gw"]\nsource = "fw.bin"\n'
        'destination = "/inbox/{device}.bin"\nverify = false\nreport = "report"\n'
    )
    assert main(["fleet", "run", str(tmp_path / "job.toml")]) == 0, capsys.readouterr()
    receipts = json.loads((tmp_path / "report.json").read_text())["devices"]
    assert [(r["name"], r["status"], r["sha256"]) for r in receipts] == [
        ("as-alice", "ok", digest), ("as-bob", "ok", digest),
    ]  # fmt: skip
    assert sorted(p.name for p in gw.area("inbox").iterdir()) == ["as-alice.bin", "as-bob.bin"]
    journalled = [e for e in gw.recorder.of("file.upload", "success") if digest in str(e)]
    assert len(journalled) == 2


async def test_a_gateway_runs_no_sha256sum_and_says_so(gw: RunningGateway, tmp_path: Path) -> None:
    source = tmp_path / "x.bin"
    source.write_bytes(b"x" * 1000)
    client = client_for(gw)
    client.remote_hash = "sha256sum"
    async with client:
        with pytest.raises(ClientError, match="sha256sum"):
            await client.put(source, "/inbox/x.bin", verify=True)
