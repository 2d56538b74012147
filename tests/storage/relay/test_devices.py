"""The relay against real OpenSSH devices: one SFTP, one legacy-SCP-only."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

import pytest

from conduit.errors import Fault, StorageError
from conduit.storage.relay import RelayBackend, open_device

from .conftest import Devices, device_config
from .helpers import disk_sha, download, sha, upload

SCP_COMMANDS = {
    "rename": "mv -f -- {old} {new}",
    "delete": "rm -f -- {path}",
    "mkdir": "mkdir -- {path}",
    "rmdir": "rmdir -- {path}",
    "list": "find {path} -mindepth 1 -maxdepth 1 -printf '%y %s %T@ %f\\0'",
    "sha256": "sha256sum -- {path}",
}


def backend_for(
    devices: Devices, tmp_path: Path, protocol: str, **extra: object
) -> tuple[RelayBackend, Path]:
    sshd = devices.sftp if protocol == "sftp" else devices.scp
    root = tmp_path / f"root-{protocol}"
    config = device_config(sshd, devices.identity, root, protocol=protocol, **extra)
    return open_device(f"dev-{protocol}", config, tmp_path / "state"), root


def hidden_leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".conduit-*")]


@pytest.mark.parametrize(
    ("protocol", "commands", "atomic"),
    [("sftp", {}, True), ("scp", {}, False), ("scp", SCP_COMMANDS, True)],
)
async def test_upload_download_roundtrip(
    devices: Devices, tmp_path: Path, protocol: str, commands: dict[str, str], atomic: bool
) -> None:
    backend, root = backend_for(devices, tmp_path, protocol, commands=commands)
    data = os.urandom(1024 * 1024 + 17)
    try:
        handle = await upload(backend, ("fw.bin",), data)
        assert disk_sha(root / "fw.bin") == sha(data)
        assert handle.device_sha256 == sha(data) == handle.local_sha256
        assert handle.atomic is atomic
        assert handle.custody is not None
        assert handle.custody.method == ("command" if commands else "read-back")
        assert await download(backend, ("fw.bin",)) == data
        st = await backend.stat(("fw.bin",))
        assert st.is_file and st.size == len(data)
        assert hidden_leftovers(root) == []
        # overwrite keeps working and is whole
        small = b"v2"
        await upload(backend, ("fw.bin",), small)
        assert (root / "fw.bin").read_bytes() == small
        assert backend.protocol == protocol
    finally:
        await backend.close()


@pytest.mark.parametrize("protocol", ["sftp", "scp"])
async def test_empty_file_and_subfolder(devices: Devices, tmp_path: Path, protocol: str) -> None:
    backend, root = backend_for(devices, tmp_path, protocol)
    (root / "sub").mkdir(parents=True)
    try:
        await upload(backend, ("sub", "empty.cfg"), b"")
        assert (root / "sub" / "empty.cfg").read_bytes() == b""
        assert (await backend.stat(("sub",))).is_dir
        assert (await backend.stat(())).is_dir
        with pytest.raises(StorageError) as info:
            await backend.stat(("missing",))
        assert info.value.fault is Fault.NOT_FOUND
        with pytest.raises(StorageError) as info:
            await upload(backend, ("nodir", "x.bin"), b"x")
        assert info.value.fault in (Fault.NOT_FOUND, Fault.NOT_A_DIRECTORY)
        assert not (root / "nodir").exists()
    finally:
        await backend.close()


async def test_sftp_operations(devices: Devices, tmp_path: Path) -> None:
    backend, root = backend_for(devices, tmp_path, "sftp")
    try:
        await backend.mkdir(("logs",))
        assert (root / "logs").is_dir()
        with pytest.raises(StorageError) as info:
            await backend.mkdir(("logs",))
        assert info.value.fault is Fault.EXISTS
        await upload(backend, ("logs", "a.log"), b"alpha")
        await upload(backend, ("logs", "b.log"), b"beta")
        names = [e.name for e in await backend.listdir(("logs",))]
        assert names == ["a.log", "b.log"]
        with pytest.raises(StorageError) as info:
            await backend.rename(("logs", "a.log"), ("logs", "b.log"), overwrite=False)
        assert info.value.fault is Fault.EXISTS
        await backend.rename(("logs", "a.log"), ("logs", "b.log"), overwrite=True)
        assert (root / "logs" / "b.log").read_bytes() == b"alpha"
        await backend.rename(("logs", "b.log"), ("logs", "c.log"), overwrite=False)
        await backend.set_times(("logs", "c.log"), 1_600_000_000, 1_600_000_100)
        assert (root / "logs" / "c.log").stat().st_mtime == 1_600_000_100
        with pytest.raises(StorageError) as info:
            await backend.rmdir(("logs",))
        assert info.value.fault is Fault.NOT_EMPTY
        await backend.remove(("logs", "c.log"))
        await backend.rmdir(("logs",))
        assert list(root.iterdir()) == []
        with pytest.raises(StorageError) as info:
            await backend.remove(("nope",))
        assert info.value.fault is Fault.NOT_FOUND
    finally:
        await backend.close()


async def test_scp_only_device_refuses_what_it_cannot_do(devices: Devices, tmp_path: Path) -> None:
    backend, root = backend_for(devices, tmp_path, "scp")
    (root / "f.txt").write_bytes(b"x")
    calls = [
        backend.listdir(()),
        backend.rename(("f.txt",), ("g.txt",), overwrite=True),
        backend.remove(("f.txt",)),
        backend.mkdir(("d",)),
        backend.rmdir(("d",)),
        backend.set_times(("f.txt",), 1, 2),
    ]
    try:
        for call in calls:
            with pytest.raises(StorageError) as info:
                await call
            assert info.value.fault is Fault.UNSUPPORTED
            assert info.value.reason == "not supported by this device"
        assert sorted(p.name for p in root.iterdir()) == ["f.txt"]
    finally:
        await backend.close()


async def test_scp_device_with_command_templates(devices: Devices, tmp_path: Path) -> None:
    backend, root = backend_for(devices, tmp_path, "scp", commands=SCP_COMMANDS)
    try:
        await backend.mkdir(("cfg",))
        await upload(backend, ("cfg", "a.cfg"), b"one")
        await upload(backend, ("cfg", "b.cfg"), b"two")
        entries = await backend.listdir(("cfg",))
        assert [(e.name, e.stat.size) for e in entries] == [("a.cfg", 3), ("b.cfg", 3)]
        with pytest.raises(StorageError) as info:
            await backend.rename(("cfg", "a.cfg"), ("cfg", "b.cfg"), overwrite=False)
        assert info.value.fault is Fault.EXISTS
        await backend.rename(("cfg", "a.cfg"), ("cfg", "c.cfg"), overwrite=False)
        await backend.remove(("cfg", "b.cfg"))
        assert sorted(p.name for p in (root / "cfg").iterdir()) == ["c.cfg"]
        await backend.remove(("cfg", "c.cfg"))
        await backend.rmdir(("cfg",))
        assert list(root.iterdir()) == []
    finally:
        await backend.close()


async def test_sftp_preferred_scp_fallback(devices: Devices, tmp_path: Path) -> None:
    config = device_config(
        devices.scp, devices.identity, tmp_path / "root", protocol="sftp", protocols=["sftp", "scp"]
    )
    backend = open_device("both", config, tmp_path / "state")
    try:
        await upload(backend, ("x.bin",), b"data")
        assert backend.protocol == "scp"
        assert (tmp_path / "root" / "x.bin").read_bytes() == b"data"
    finally:
        await backend.close()
    only_sftp = device_config(devices.scp, devices.identity, tmp_path / "root", protocol="sftp")
    backend = open_device("sftp-only", only_sftp, tmp_path / "state")
    try:
        with pytest.raises(StorageError) as info:
            await backend.stat(())
        assert info.value.fault is Fault.UNSUPPORTED
    finally:
        await backend.close()


NASTY = [
    "a;touch {m}",
    "$(touch {m})",
    "`touch {m}`",
    "sp ace 'single' \"double\"",
    "-rf",
    "--help",
    "*glob?[ab]",
    "back\\slash & | > <",
    "caf\u00e9 \u2603",
]


@pytest.mark.parametrize(
    ("protocol", "commands"), [("sftp", {}), ("scp", SCP_COMMANDS), ("scp", {})]
)
async def test_shell_metacharacters_land_byte_exact(
    devices: Devices, tmp_path: Path, protocol: str, commands: dict[str, str]
) -> None:
    marker = f"pwned-{secrets.token_hex(4)}"
    backend, root = backend_for(devices, tmp_path, protocol, commands=commands)
    home = Path(os.path.expanduser("~root"))
    try:
        for pattern in NASTY:
            name = pattern.format(m=marker)
            data = name.encode() * 3
            await upload(backend, (name,), data)
            assert (root / name).read_bytes() == data, name
            assert await download(backend, (name,)) == data
            assert (await backend.stat((name,))).size == len(data)
            if commands:
                await backend.rename((name,), (name + " 2",), overwrite=True)
                assert (root / (name + " 2")).read_bytes() == data
        if commands or protocol == "sftp":
            listed = {e.name for e in await backend.listdir(())}
            assert len(listed) == len(NASTY)
        for where in (root, home, Path("/"), Path.cwd(), tmp_path):
            assert not (where / marker).exists()  # no command ever ran
        assert not [p for p in tmp_path.rglob(marker)]
        assert sorted(p.name for p in root.iterdir()) == sorted(
            p.format(m=marker) + (" 2" if commands else "") for p in NASTY
        )
    finally:
        await backend.close()


async def test_scp_refuses_newline_names(devices: Devices, tmp_path: Path) -> None:
    backend, root = backend_for(devices, tmp_path, "scp")
    try:
        with pytest.raises(StorageError) as info:
            await backend.open_write(("two\nlines",))
        assert info.value.fault is Fault.FORBIDDEN
        assert list(root.iterdir()) == []
    finally:
        await backend.close()


async def test_wrong_pinned_host_key_refused(devices: Devices, tmp_path: Path) -> None:
    wrong = devices.scp.host_key  # a real key, just not this device's
    backend, _root = backend_for(devices, tmp_path, "sftp", host_key=wrong)
    try:
        with pytest.raises(StorageError) as info:
            await backend.stat(())
        assert info.value.fault is Fault.UNAVAILABLE
        assert "host key" in info.value.reason
    finally:
        await backend.close()


async def test_no_pin_and_no_tofu_refused(devices: Devices, tmp_path: Path) -> None:
    backend, _ = backend_for(devices, tmp_path, "sftp", host_key=None)
    try:
        with pytest.raises(StorageError) as info:
            await backend.stat(())
        assert "no host key pinned" in info.value.reason
    finally:
        await backend.close()


async def test_trust_on_first_use_pins_the_key(devices: Devices, tmp_path: Path) -> None:
    backend, _ = backend_for(devices, tmp_path, "sftp", host_key=None, trust_on_first_use=True)
    try:
        await backend.stat(())
    finally:
        await backend.close()
    state = tmp_path / "state" / "relay_known_hosts"
    stored = state.read_text()
    assert devices.sftp.host_key in stored
    assert f"[127.0.0.1]:{devices.sftp.port}" in stored
    # a different key under the same address is now refused
    state.write_text(stored.replace(devices.sftp.host_key, devices.scp.host_key))
    backend, _ = backend_for(devices, tmp_path, "sftp", host_key=None, trust_on_first_use=True)
    try:
        with pytest.raises(StorageError) as info:
            await backend.stat(())
        assert "host key" in info.value.reason
    finally:
        await backend.close()


@pytest.mark.parametrize("protocol", ["sftp", "scp"])
async def test_device_down_fails_fast(devices: Devices, tmp_path: Path, protocol: str) -> None:
    from .sshd import free_port

    backend, _ = backend_for(
        devices, tmp_path, protocol, address=f"127.0.0.1:{free_port()}", connect_timeout=2.0
    )
    started = time.monotonic()
    try:
        with pytest.raises(StorageError) as info:
            await backend.open_write(("x.bin",)) if protocol == "sftp" else await upload(
                backend, ("x.bin",), b"x"
            )
        assert info.value.fault is Fault.UNAVAILABLE
        assert time.monotonic() - started < 3
    finally:
        await backend.close()


async def test_unroutable_device_times_out(devices: Devices, tmp_path: Path) -> None:
    # A listener that accepts TCP but never speaks SSH: must not hang.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend, _ = backend_for(
        devices, tmp_path, "sftp", address=f"127.0.0.1:{port}", connect_timeout=1.0
    )
    started = time.monotonic()
    try:
        with pytest.raises(StorageError) as info:
            await backend.stat(())
        assert info.value.fault is Fault.UNAVAILABLE
        assert time.monotonic() - started < 2.5
    finally:
        await backend.close()
        server.close()


@pytest.mark.parametrize("protocol", ["sftp", "scp"])
async def test_custody_mismatch_detected(devices: Devices, tmp_path: Path, protocol: str) -> None:
    lying = dict(SCP_COMMANDS, sha256="echo " + "0" * 64 + " {path}")
    backend, root = backend_for(devices, tmp_path, protocol, commands=lying)
    try:
        with pytest.raises(StorageError) as info:
            await upload(backend, ("fw.bin",), b"firmware")
        assert info.value.fault is Fault.FAILURE
        assert info.value.reason == "device copy does not match"
        assert list(root.iterdir()) == []  # not under the final name, temp removed
    finally:
        await backend.close()


async def test_custody_detects_tampering_on_the_device(devices: Devices, tmp_path: Path) -> None:
    tamper = {"sha256": "echo evil >> {path}; sha256sum -- {path}"}
    backend, root = backend_for(devices, tmp_path, "sftp", commands=tamper)
    try:
        with pytest.raises(StorageError) as info:
            await upload(backend, ("fw.bin",), b"firmware")
        assert info.value.reason == "device copy does not match"
        assert "sent sha256" in info.value.detail
        assert list(root.iterdir()) == []
    finally:
        await backend.close()


async def test_connection_is_shared(devices: Devices, tmp_path: Path) -> None:
    backend, root = backend_for(devices, tmp_path, "sftp")
    config = backend.device
    other = RelayBackend("dev-sftp", config, state_dir=tmp_path / "state")
    try:
        a, b = os.urandom(300_000), os.urandom(300_000)
        await asyncio.gather(
            upload(backend, ("a.bin",), a, chunk=32 * 1024),
            upload(other, ("b.bin",), b, chunk=32 * 1024),
        )
        assert backend.link is other.link
        assert backend.link.connects == 1
        assert disk_sha(root / "a.bin") == sha(a) and disk_sha(root / "b.bin") == sha(b)
    finally:
        await backend.close()
        await other.close()


async def test_scp_uploads_share_connection(devices: Devices, tmp_path: Path) -> None:
    backend, root = backend_for(devices, tmp_path, "scp")
    try:
        blobs = [os.urandom(100_000) for _ in range(3)]
        await asyncio.gather(*(upload(backend, (f"{i}.bin",), b) for i, b in enumerate(blobs)))
        assert backend.link.connects == 1
        for i, blob in enumerate(blobs):
            assert disk_sha(root / f"{i}.bin") == sha(blob)
    finally:
        await backend.close()


async def test_scp_reads_reordered_and_backwards(devices: Devices, tmp_path: Path) -> None:
    backend, root = backend_for(devices, tmp_path, "scp")
    data = os.urandom(500_000)
    (root / "r.bin").write_bytes(data)
    try:
        handle = await backend.open_read(("r.bin",))
        assert handle.size == len(data)
        assert await handle.read(100_000, 1000) == data[100_000:101_000]
        assert await handle.read(0, 1000) == data[:1000]  # within the window
        assert await handle.read(499_990, 100) == data[499_990:]
        assert await handle.read(len(data), 10) == b""
        await handle.close()
    finally:
        await backend.close()
    with pytest.raises(StorageError) as info:
        await download(backend, ("missing",))
    assert info.value.fault is Fault.NOT_FOUND
