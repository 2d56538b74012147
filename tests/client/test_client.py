"""``conduit.client.Client`` against real sshd devices: hostile cases first."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from conduit.client import Client, ClientError
from conduit.client.common import partial_path

from .conftest import Devices


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "conduit" in p.name)


# -- refusals ---------------------------------------------------------------


async def test_wrong_host_key_is_refused_before_anything_is_sent(
    devices: Devices, tmp_path: Path
) -> None:
    source = tmp_path / "fw.bin"
    source.write_bytes(b"x" * 1000)
    far = tmp_path / "far"
    far.mkdir()
    client = devices.client(devices.sftp, host_key=devices.scp.host_key)
    with pytest.raises(ClientError, match="host key not verified"):
        async with client:
            await client.put(source, str(far / "fw.bin"))
    assert list(far.iterdir()) == []


async def test_unknown_host_key_without_known_hosts_is_refused(
    devices: Devices, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(ClientError, match="host key not verified"):
        await devices.client(devices.sftp, host_key=None, known_hosts=empty).open()


async def test_a_host_that_never_speaks_times_out(devices: Devices) -> None:
    client = Client("127.0.0.1", port=devices.hang, user="root", ssh_config=(),
                    connect_timeout=1.0, agent_path=None)  # fmt: skip
    with pytest.raises(ClientError, match="timed out"):
        await client.open()


async def test_a_closed_port_is_refused(devices: Devices) -> None:
    client = Client("127.0.0.1", port=devices.closed, ssh_config=(), agent_path=None)
    with pytest.raises(ClientError, match="connection refused"):
        await client.open()


async def test_a_key_the_device_does_not_accept_is_permission_denied(devices: Devices) -> None:
    with pytest.raises(ClientError, match="permission denied"):
        await devices.client(devices.sftp, identity=devices.stranger).open()


async def test_missing_key_file_and_bad_pin_are_one_line_errors(
    devices: Devices, tmp_path: Path
) -> None:
    with pytest.raises(ClientError, match="no such key file"):
        await devices.client(devices.sftp, identity=tmp_path / "nope").open()
    with pytest.raises(ClientError, match="pinned host key is not a public key"):
        await devices.client(devices.sftp, host_key="ssh-ed25519 garbage").open()


async def test_missing_remote_file_leaves_nothing_locally(devices: Devices, tmp_path: Path) -> None:
    async with devices.client(devices.sftp) as client:
        with pytest.raises(ClientError, match="no such file"):
            await client.get(str(tmp_path / "absent.bin"), tmp_path / "got.bin")
    assert not (tmp_path / "got.bin").exists()
    assert leftovers(tmp_path) == []


async def test_sftp_only_refuses_a_device_without_sftp(devices: Devices) -> None:
    with pytest.raises(ClientError, match="no SFTP server"):
        await devices.client(devices.scp, protocol="sftp").open()


async def test_a_local_folder_that_does_not_exist_is_refused(
    devices: Devices, tmp_path: Path
) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"data")
    async with devices.client(devices.sftp) as client:
        with pytest.raises(ClientError, match="no such local folder"):
            await client.get(str(source), tmp_path / "missing" / "x.bin")
        with pytest.raises(ClientError, match="is a folder"):
            await client.put(tmp_path, str(tmp_path / "elsewhere"))


async def test_a_link_cut_mid_download_keeps_only_a_hidden_partial_then_resumes(
    devices: Devices, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(24 << 20))
    target = tmp_path / "out" / "big.bin"
    target.parent.mkdir()
    cut = False

    def progress(_name: str, done: int, _total: int) -> None:
        nonlocal cut
        if done >= (4 << 20) and not cut:
            cut = True
            devices.sftp.kill_sessions()

    async with devices.client(devices.sftp, limit_kbit=200_000) as client:
        with pytest.raises(ClientError):
            await client.get(str(source), target, progress=progress)
    assert not target.exists()
    kept = partial_path(target).stat().st_size
    assert 0 < kept < source.stat().st_size
    async with devices.client(devices.sftp) as client:
        [got] = await client.get(str(source), target, resume=True)
    assert got.resumed_from == kept
    assert got.sha256 == sha(source) == sha(target)
    assert leftovers(target.parent) == []


async def test_resume_with_a_wrong_prefix_starts_over(devices: Devices, tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(300_000))
    target = tmp_path / "copy.bin"
    partial_path(target).write_bytes(b"not the same bytes" * 100)
    async with devices.client(devices.sftp) as client:
        [got] = await client.get(str(source), target, resume=True)
    assert got.resumed_from == 0
    assert sha(target) == sha(source)
    assert not partial_path(target).exists()


# -- copies -----------------------------------------------------------------


async def test_sftp_put_and_get_hash_as_they_stream_and_leave_no_temp(
    devices: Devices, tmp_path: Path
) -> None:
    source = tmp_path / "fw.bin"
    source.write_bytes(os.urandom(3 << 20))
    far = tmp_path / "far"
    far.mkdir()
    (far / "fw.bin").write_bytes(b"old firmware")
    async with devices.client(devices.sftp) as client:
        assert client.protocol == "sftp"
        assert client.conn is not None  # the gateway's lists: AES-GCM first, no zlib
        assert client.conn.get_extra_info("send_cipher") == "aes128-gcm@openssh.com"
        assert client.conn.get_extra_info("send_compression") == "none"
        [sent] = await client.put(source, str(far), verify=True)
        [got] = await client.get(str(far / "fw.bin"), tmp_path / "back.bin", verify=True)
        assert await client.sha256(str(far / "fw.bin")) == sha(source)
    assert sent.destination == str(far / "fw.bin")
    assert sent.sha256 == got.sha256 == sha(source) == sha(far / "fw.bin")
    assert sent.verified and got.verified and sent.bytes == 3 << 20
    assert leftovers(far) == [] and leftovers(tmp_path) == []


async def test_recursive_copies_with_preserved_times(devices: Devices, tmp_path: Path) -> None:
    tree = tmp_path / "configs"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.cfg").write_text("alpha")
    (tree / "sub" / "b.cfg").write_text("beta")
    os.utime(tree / "a.cfg", (1_600_000_000, 1_600_000_000))
    far = tmp_path / "far"
    far.mkdir()
    for sshd in (devices.sftp, devices.scp):
        dest = far / sshd.workdir.name
        dest.mkdir()
        back = tmp_path / f"back-{sshd.workdir.name}"
        async with devices.client(sshd) as client:
            sent = await client.put(tree, str(dest) + "/", recursive=True, preserve=True)
            got = await client.get(str(dest / "configs"), back, recursive=True, preserve=True)
        assert sorted(t.sha256 for t in sent) == sorted(t.sha256 for t in got)
        assert (back / "sub" / "b.cfg").read_text() == "beta"
        assert (dest / "configs" / "a.cfg").stat().st_mtime == 1_600_000_000
        assert (back / "a.cfg").stat().st_mtime == 1_600_000_000
        assert leftovers(tmp_path) == []


async def test_legacy_scp_device_is_used_when_sftp_is_refused(
    devices: Devices, tmp_path: Path
) -> None:
    source = tmp_path / "cfg.txt"
    source.write_bytes(os.urandom(100_000))
    async with devices.client(devices.scp) as client:
        assert client.protocol == "scp"
        [sent] = await client.put(source, str(tmp_path / "far.txt"), verify=True)
        [got] = await client.get(str(tmp_path / "far.txt"), tmp_path / "back.txt", verify=True)
        with pytest.raises(ClientError, match="needs SFTP"):
            await client.sha256(str(tmp_path / "far.txt"))
    assert sent.protocol == got.protocol == "scp"
    assert sent.sha256 == got.sha256 == sha(source) == sha(tmp_path / "back.txt")
    assert leftovers(tmp_path) == []


async def test_ssh_config_alias_known_hosts_and_jump(devices: Devices, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{devices.sftp.port} {devices.sftp.host_key}\n"
        f"[127.0.0.1]:{devices.scp.port} {devices.scp.host_key}\n"
    )
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host rtu-01\n  HostName 127.0.0.1\n  Port {devices.sftp.port}\n  User root\n"
        f"  IdentityFile {devices.identity}\n"
    )
    source = tmp_path / "x.bin"
    source.write_bytes(b"through the alias")
    alias = Client("rtu-01", ssh_config=(config,), known_hosts=known, agent_path=None)
    async with alias:
        [sent] = await alias.put(source, str(tmp_path / "y.bin"))
    assert sent.sha256 == sha(tmp_path / "y.bin")
    jumped = devices.client(
        devices.sftp, host_key=None, known_hosts=known, jump=f"root@127.0.0.1:{devices.scp.port}"
    )
    async with jumped:
        [got] = await jumped.get(str(tmp_path / "y.bin"), tmp_path / "z.bin")
        [jump] = jumped.jumps
    assert got.sha256 == sent.sha256
    await asyncio.wait_for(jump.wait_closed(), 5)  # the jump is closed with its client
    assert jump.is_closed()
    # The jump is really taken: through a closed port there is no way in.
    with pytest.raises(ClientError, match="connection refused"):
        await devices.client(devices.sftp, jump=f"root@127.0.0.1:{devices.closed}").open()


async def test_a_link_cut_mid_upload_leaves_nothing_under_the_final_name(
    devices: Devices, tmp_path: Path
) -> None:
    source = tmp_path / "fw.bin"
    source.write_bytes(os.urandom(24 << 20))
    far = tmp_path / "far"
    far.mkdir()
    (far / "fw.bin").write_bytes(b"the firmware in service")
    cut = False

    def progress(_name: str, done: int, _total: int) -> None:
        nonlocal cut
        if done >= (4 << 20) and not cut:
            cut = True
            devices.sftp.kill_sessions()

    async with devices.client(devices.sftp, limit_kbit=200_000) as client:
        with pytest.raises(ClientError):
            await client.put(source, str(far / "fw.bin"), progress=progress)
    assert (far / "fw.bin").read_bytes() == b"the firmware in service"
    # The far temp could not be removed over a dead link: hidden, never the final name.
    assert all(n.startswith(".fw.bin.conduit-") for n in leftovers(far) if n != "fw.bin")


async def test_verify_by_the_devices_own_sha256sum(devices: Devices, tmp_path: Path) -> None:
    source = tmp_path / "cfg.bin"
    source.write_bytes(os.urandom(300_000))
    for sshd in (devices.sftp, devices.scp):
        far = tmp_path / f"far-{sshd.workdir.name}.bin"
        async with devices.client(sshd, remote_hash="sha256sum") as client:
            [sent] = await client.put(source, str(far), verify=True)
            [got] = await client.get(str(far), tmp_path / "back.bin", verify=True)
            assert await client.sha256(str(far)) == sha(source)
            with pytest.raises(ClientError, match=r"sha256sum failed: .*No such file"):
                await client.sha256(str(tmp_path / "absent"))
        assert sent.verified and got.verified and sent.sha256 == got.sha256 == sha(source)


async def test_a_far_name_that_is_not_a_plain_name_is_refused_in_a_tree(
    devices: Devices, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "ok.txt").write_text("fine")
    (tree / "link.txt").symlink_to(tree / "ok.txt")
    async with devices.client(devices.sftp) as client:
        got = await client.get(str(tree), tmp_path / "copy", recursive=True)
        assert sorted(Path(t.destination).name for t in got) == ["link.txt", "ok.txt"]
        (tree / "evil\x1b[2Jname").write_text("clears your screen")
        with pytest.raises(ClientError, match="refusing the far name"):
            await client.get(str(tree), tmp_path / "again", recursive=True)
    assert (tmp_path / "copy" / "link.txt").read_text() == "fine"
    assert not any("evil" in p.name for p in tmp_path.rglob("*") if p.parent != tree)


RENAME = "mv -f -T -- {old} {new}"


async def test_legacy_scp_uploads_land_atomically_with_a_rename_command(
    devices: Devices, tmp_path: Path
) -> None:
    source = tmp_path / "fw.bin"
    source.write_bytes(os.urandom(8 << 20))
    far = tmp_path / "far"
    far.mkdir()
    (far / "fw.bin").write_bytes(b"in service")
    cut = False

    def progress(_name: str, done: int, _total: int) -> None:
        nonlocal cut
        if done >= (2 << 20) and not cut:
            cut = True
            devices.scp.kill_sessions()

    async with devices.client(devices.scp, scp_rename=RENAME) as client:
        with pytest.raises(ClientError):
            await client.put(source, str(far / "fw.bin"), progress=progress)
    assert (far / "fw.bin").read_bytes() == b"in service"  # a cut link: untouched
    for leftover in far.glob(".fw.bin.conduit-*"):
        leftover.unlink()
    async with devices.client(devices.scp, scp_rename=RENAME) as client:
        [sent] = await client.put(source, str(far / "fw.bin"), verify=True)
    assert sent.verified and sha(far / "fw.bin") == sha(source)
    assert leftovers(far) == []
    async with devices.client(devices.scp, scp_rename="false {old} {new}") as client:
        with pytest.raises(ClientError, match=r"rename failed \(exit 1\).*stays under \.fw\.bin"):
            await client.put(tmp_path / "fw.bin", str(far / "fw.bin"))
    assert sha(far / "fw.bin") == sha(source)
    with pytest.raises(ClientError, match=r"use \{old\} and \{new\}"):
        devices.client(devices.scp, scp_rename="mv {old} /tmp/{x}")
