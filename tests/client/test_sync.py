"""``conduit sync`` through a real Conduit gateway (its journal on disk) and against a
real OpenSSH sshd: only changed blocks cross, the result is atomic and verified,
hostile extension requests are refused, and the journal still verifies."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from conduit._asyncssh.sftpclient import check_file
from conduit.cli.main import main
from conduit.client import Client, ClientError
from conduit.client.sync import sync_get, sync_put
from conduit.config import parse
from tests.client.conftest import Devices
from tests.gateway.test_audit_trail import audited_policy, journal_records
from tests.support.gateway import RunningGateway, start_gateway, stop_gateway

MIB = 1 << 20


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]
) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("site")
    text = audited_policy(root, keys, "")
    running = start_gateway(parse(text, source=root / "conduit.toml"), keys, root, "journal")
    (root / "conduit.toml").write_text(text)
    yield running
    stop_gateway(running)


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


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scatter(data: bytes, fraction: float, seed: int, piece: int = 1000) -> bytes:
    """``data`` with about ``fraction`` of it overwritten in ``piece``-byte spots."""
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(max(1, int(len(data) * fraction / piece))):
        at = rng.randrange(0, len(data) - piece)
        out[at : at + piece] = rng.randbytes(piece)
    return bytes(out)


# -- hostile requests against the gateway's extensions --------------------------------


async def test_hostile_extension_requests_are_refused_with_a_clear_status(
    site: RunningGateway,
) -> None:
    (site.area("inbox") / "h.bin").write_bytes(os.urandom(64 * 1024))
    (site.area("inbox") / "w.bin").write_bytes(b"")
    async with site.connect() as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/inbox/h.bin", "rb") as file, sftp.open("/inbox/n.bin", "wb") as new:
            cases = [
                ((file.handle, 0, 0, 4096 * 4096 * 2), "block size"),  # over 16 MiB blocks
                ((file.handle, 0, 0, 17), "block size"),  # tiny blocks
                ((file.handle, 1 << 63, 0, 4096), "beyond the end"),  # a "negative" offset
                ((file.handle, (1 << 64) - 1, 1, 4096), "beyond the end"),
                ((b"\xff\xff\xff\xff", 0, 0, 4096), "invalid handle"),
                ((new.handle, 0, 0, 4096), "hashed whole"),
            ]
            for args, message in cases:
                with pytest.raises(asyncssh.SFTPError, match=message):
                    await check_file(sftp, *args)
            # a huge block count: 5,000 blocks of 4 KiB from a 20 MiB file
            big = site.area("inbox") / "big.bin"
            big.write_bytes(b"\0" * (20 * MIB))
            async with sftp.open("/inbox/big.bin", "rb") as huge:
                with pytest.raises(asyncssh.SFTPError, match="more than 4096 blocks"):
                    await check_file(sftp, huge.handle, 0, 0, 4096)
                assert len(await check_file(sftp, huge.handle, 0, 4096 * 4096, 4096)) == 4096 * 32
            # a whole-file hash of 5 GiB (sparse): more than one request may read
            with (site.area("inbox") / "sparse.bin").open("wb") as sparse:
                sparse.truncate(5 << 30)
            async with sftp.open("/inbox/sparse.bin", "rb") as vast:
                with pytest.raises(asyncssh.SFTPError, match="bytes in one request"):
                    await check_file(sftp, vast.handle, 0, 0, 0)
            (site.area("inbox") / "sparse.bin").unlink()
            # copy-data: backwards, into a file open for reading, out of range, length 0
            for copy, message in [
                ((file, new, 0, 100, 50), "front to back"),
                ((file, file, 0, 100, 0), "copies from a file open for reading"),
                ((new, new, 0, 100, 0), "copies from a file open for reading"),
                ((file, new, 60 * 1024, 8 * 1024, 0), "source ends"),
                ((file, new, 0, 0, 0), "length"),
                ((file, new, 0, 65 * MIB, 0), "length"),
            ]:
                src, dst, offset, length, at = copy
                with pytest.raises(asyncssh.SFTPError, match=message):
                    await sftp.remote_copy(src, dst, offset, length, at)
        # paths outside the area never get a handle; the extension takes handles only
        with pytest.raises(asyncssh.SFTPError):
            await sftp.open("/inbox/../../etc/passwd", "rb")
    whole = hashlib.sha256((site.area("inbox") / "h.bin").read_bytes()).digest()
    async with site.connect() as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/inbox/h.bin", "rb") as file:
            assert await check_file(sftp, file.handle, 0, 0, 0) == whole
    assert main(["audit", "verify", "--config", str(site.root / "conduit.toml")]) == 0


async def test_a_reader_without_the_read_grant_gets_no_hashes(site: RunningGateway) -> None:
    """bob may only drop files into /inbox: he cannot even see that the file is
    there, let alone open it for reading or learn a hash of it; his sync becomes a
    full copy, which may not replace the file, and fails clearly."""
    (site.area("inbox") / "secret.bin").write_bytes(os.urandom(10_000))
    local = site.root / "bob.bin"
    local.write_bytes(os.urandom(10_000))
    async with client_for(site, "bob") as client:
        with pytest.raises(ClientError, match="permission denied"):
            await sync_put(client, local, "/inbox/secret.bin")
    bobs = [e for e in journal_records(site.root / "audit") if e.get("principal") == "bob"]
    assert not [e for e in bobs if e["type"] == "file.download"]
    assert [e["outcome"] for e in bobs if e.get("path") == "/inbox/secret.bin"] == ["denied"]


# -- uploads ------------------------------------------------------------------------


async def test_upload_sends_only_what_changed(site: RunningGateway, tmp_path: Path) -> None:
    original = os.urandom(8 * MIB)
    far = site.area("inbox") / "img.bin"
    far.write_bytes(original)
    local = tmp_path / "img.bin"
    async with client_for(site) as client:
        local.write_bytes(original)
        same = await sync_put(client, local, "/inbox/img.bin")
        assert (same.mode, same.sent, same.reused) == ("delta", 0, len(original))

        changed = scatter(original, 0.01, seed=1)
        local.write_bytes(changed)
        result = await sync_put(client, local, "/inbox/img.bin")
        assert result.mode == "delta" and result.sha256 == sha(changed)
        assert far.read_bytes() == changed
        # 83 spots of 1,000 bytes (1 %), each in at most two 4 KiB blocks
        assert 0 < result.sent <= 83 * 2 * 4096, result

        appended = changed + os.urandom(300_000)
        local.write_bytes(appended)
        result = await sync_put(client, local, "/inbox/img.bin")
        assert far.read_bytes() == appended and result.sent < 300_000 + 8192

        truncated = appended[: 3 * MIB + 5]
        local.write_bytes(truncated)
        result = await sync_put(client, local, "/inbox/img.bin")
        assert far.read_bytes() == truncated and result.sent <= 8192

        local.write_bytes(b"")
        result = await sync_put(client, local, "/inbox/img.bin")
        assert far.read_bytes() == b"" and result.sha256 == sha(b"")

        local.write_bytes(b"again")
        result = await sync_put(client, local, "/inbox/img.bin")  # empty far file
        assert far.read_bytes() == b"again"

        fresh = tmp_path / "new.bin"
        fresh.write_bytes(os.urandom(100_000))
        result = await sync_put(client, fresh, "/inbox/")
        assert result.mode == "full" and "no far copy" in result.note
        assert (site.area("inbox") / "new.bin").read_bytes() == fresh.read_bytes()
    assert sorted(p.name for p in site.area("inbox").iterdir() if p.name.startswith(".")) == []
    uploads = [
        r for r in journal_records(site.root / "audit")
        if r["type"] == "file.upload" and r["outcome"] == "success" and "img.bin" in r["path"]
    ]  # fmt: skip
    assert uploads[-1]["sha256"] == sha(b"again")
    assert any(r["sha256"] == sha(changed) for r in uploads)
    assert main(["audit", "verify", "--config", str(site.root / "conduit.toml")]) == 0


async def test_a_far_file_changed_during_the_sync_is_never_half_replaced(
    site: RunningGateway, tmp_path: Path
) -> None:
    original = os.urandom(2 * MIB)
    far = site.area("inbox") / "race.bin"
    far.write_bytes(original)
    local = tmp_path / "race.bin"
    wanted = scatter(original, 0.01, seed=2)
    local.write_bytes(wanted)

    async def meddle(attempt: int) -> None:
        # someone writes into the far file in place after it was hashed (into a
        # block the sync would have copied: a new one each time)
        with far.open("r+b") as handle:
            handle.seek(4096 * (7 + 100 * attempt))
            handle.write(os.urandom(100))

    async with client_for(site) as client:
        with pytest.raises(ClientError, match="kept changing"):
            await sync_put(client, local, "/inbox/race.bin", on_hashed=meddle)
        assert far.read_bytes() != wanted  # the meddled file, never a mix under the name
        calls: list[int] = []

        async def once(attempt: int) -> None:
            calls.append(attempt)
            if attempt == 1:
                await meddle(3)

        result = await sync_put(client, local, "/inbox/race.bin", on_hashed=once)
    assert calls == [1, 2] and far.read_bytes() == wanted and result.sha256 == sha(wanted)
    assert not [p for p in site.area("inbox").iterdir() if p.name.startswith(".")]
    aborted = [
        r for r in journal_records(site.root / "audit")
        if r["type"] == "file.upload" and r["outcome"] == "failed" and "race.bin" in r["path"]
    ]  # fmt: skip
    assert len(aborted) == 3
    assert main(["audit", "verify", "--config", str(site.root / "conduit.toml")]) == 0


# -- downloads ----------------------------------------------------------------------


async def test_download_fetches_only_what_changed(site: RunningGateway, tmp_path: Path) -> None:
    original = os.urandom(4 * MIB)
    far = site.area("inbox") / "log.bin"
    far.write_bytes(scatter(original, 0.01, seed=3))
    local = tmp_path / "log.bin"
    local.write_bytes(original)
    async with client_for(site) as client:
        result = await sync_get(client, "/inbox/log.bin", local)
        assert result.mode == "delta" and local.read_bytes() == far.read_bytes()
        assert 0 < result.sent <= 41 * 2 * 4096, result  # 41 spots in 4 KiB blocks
        again = await sync_get(client, "/inbox/log.bin", tmp_path)
        assert again.sent == 0
        far.write_bytes(far.read_bytes()[:MIB])
        cut = await sync_get(client, "/inbox/log.bin", local)
        assert local.read_bytes() == far.read_bytes() and cut.sent == 0
        fresh = await sync_get(client, "/inbox/log.bin", tmp_path / "other.bin")
        assert fresh.mode == "full"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


async def test_download_of_a_far_file_changed_midway_keeps_the_local_copy(
    site: RunningGateway, tmp_path: Path
) -> None:
    original = os.urandom(MIB)
    far = site.area("inbox") / "moving.bin"
    far.write_bytes(scatter(original, 0.02, seed=4))
    local = tmp_path / "moving.bin"
    local.write_bytes(original)

    async def meddle(attempt: int) -> None:
        far.write_bytes(os.urandom(MIB))  # replaced after each hashing

    async with client_for(site) as client:
        with pytest.raises(ClientError, match="kept changing"):
            await sync_get(client, "/inbox/moving.bin", local, on_hashed=meddle)
    assert local.read_bytes() == original
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# -- a plain OpenSSH device: no block hashes, a full copy, said so --------------------


async def test_a_plain_sshd_gets_a_full_copy_and_says_why(devices: Devices, tmp_path: Path) -> None:
    local = tmp_path / "fw.bin"
    local.write_bytes(os.urandom(300_000))
    remote = str(tmp_path / "far.bin")  # the device is this machine
    async with devices.client(devices.sftp) as client:
        first = await sync_put(client, local, remote)
        local.write_bytes(scatter(local.read_bytes(), 0.01, seed=5))
        second = await sync_put(client, local, remote)
        back = await sync_get(client, remote, tmp_path / "copy.bin")
    assert first.mode == second.mode == back.mode == "full"
    assert "no far copy" in first.note and "no block hashes" in second.note
    assert Path(remote).read_bytes() == local.read_bytes()
    assert second.sha256 == sha(local.read_bytes())


# -- the command line ---------------------------------------------------------------


def test_conduit_sync_prints_the_hash_and_how(
    site: RunningGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = os.urandom(MIB)
    far = site.area("inbox") / "cli.bin"
    far.write_bytes(original)
    local = tmp_path / "cli.bin"
    local.write_bytes(scatter(original, 0.01, seed=6))
    common = [
        "-P", str(site.port), "-i", str(site.keys["alice"]),
        "--known-hosts", str(site.known_hosts), "-F", "/dev/null",
    ]  # fmt: skip
    assert main(["sync", *common, str(local), "alice@127.0.0.1:/inbox/cli.bin"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{sha(local.read_bytes())}  /inbox/cli.bin  (delta: sent ")
    assert far.read_bytes() == local.read_bytes()

    back = tmp_path / "back.bin"
    back.write_bytes(original)
    assert main(["sync", *common, "alice@127.0.0.1:/inbox/cli.bin", str(back)]) == 0
    assert "(delta: sent " in capsys.readouterr().out and back.read_bytes() == far.read_bytes()

    assert main(["sync", *common, str(tmp_path / "nope"), "alice@127.0.0.1:/inbox/x"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "not a file" in captured.err
    assert main(["sync", *common, "alice@127.0.0.1:/inbox/none.bin", str(back)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert back.read_bytes() == far.read_bytes()


# -- a plain device that allows a block-hash command --------------------------------

SPLIT = "split -b {block} --filter=sha256sum -- {path}"


async def test_a_device_with_a_block_hash_command_gets_a_delta(
    devices: Devices, tmp_path: Path
) -> None:
    original = os.urandom(64 * 1024)  # 16 blocks: the command forks per block
    far = tmp_path / "far" / "fw.bin"
    far.parent.mkdir()
    far.write_bytes(original)
    far.chmod(0o640)
    local = tmp_path / "fw.bin"
    local.write_bytes(original)
    async with devices.client(devices.sftp) as client:
        same = await sync_put(client, local, str(far), block_hash=SPLIT)
        assert (same.mode, same.sent) == ("delta", 0)
        changed = scatter(original, 0.01, seed=7, piece=300)
        local.write_bytes(changed)
        result = await sync_put(client, local, str(far), block_hash=SPLIT)
        assert result.mode == "delta" and far.read_bytes() == changed
        assert 0 < result.sent <= 2 * 2 * 4096, result  # 2 spots, 4 KiB blocks
        assert far.stat().st_mode & 0o777 == 0o640

        calls: list[int] = []

        async def meddle(attempt: int) -> None:
            calls.append(attempt)
            with far.open("r+b") as handle:
                handle.seek(4096 * 4 * attempt)  # a block it would copy
                handle.write(b"X" * 10)

        local.write_bytes(changed)
        with pytest.raises(ClientError, match="kept changing"):
            await sync_put(client, local, str(far), block_hash=SPLIT, on_hashed=meddle)
        assert calls == [1, 2] and far.read_bytes()[32768:32778] == b"X" * 10

        failing = await sync_put(client, local, str(far), block_hash="exit 3 # {block} {path}")
        assert failing.mode == "full" and "exited 3" in failing.note
        lying = await sync_put(client, local, str(far), block_hash="echo {block} {path}")
        assert lying.mode == "full" and "lines for" in lying.note
        with pytest.raises(ClientError, match=r"use \{block\} and \{path\}"):
            await sync_put(client, local, str(far), block_hash="sha256sum {path}")
    assert far.read_bytes() == changed  # the full copies
    assert sorted(p.name for p in far.parent.iterdir()) == ["fw.bin"]
