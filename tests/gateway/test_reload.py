"""Policy reload without restart: open sessions see the new policy; a bad file changes nothing."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from conduit.config import ConfigError
from tests.support.gateway import RunningGateway, policy_text


@pytest.fixture
def on_disk(gw: RunningGateway) -> RunningGateway:
    """A gateway whose policy file exists on disk, where reload reads it."""
    assert gw.config.source is not None
    gw.config.source.write_text(policy_text(gw.root, gw.keys))
    return gw


def test_open_session_gets_new_policy_on_next_operation(on_disk: RunningGateway) -> None:
    source = on_disk.config.source
    assert source is not None

    async def scenario() -> tuple[bool, bool]:
        async with (
            on_disk.connect() as conn,
            conn.start_sftp_client() as sftp,
        ):
            async with sftp.open("/inbox/before.txt", "wb") as f:
                await f.write(b"ok")
            # Take alice's write grant away and reload while the session is open.
            text = source.read_text().replace(
                '"list", "read", "write", "mkdir", "rename", "delete"', '"list", "read"'
            )
            source.write_text(text)
            on_disk.gateway.reload()
            try:
                async with sftp.open("/inbox/after.txt", "wb") as f:
                    await f.write(b"should not land")
                return True, True
            except asyncssh.SFTPPermissionDenied:
                return True, False

    before, after = on_disk.call(scenario())
    assert before and not after
    assert (on_disk.area("inbox") / "before.txt").read_bytes() == b"ok"
    assert not (on_disk.area("inbox") / "after.txt").exists()


def test_bad_file_keeps_last_good_policy(on_disk: RunningGateway, tmp_path: Path) -> None:
    source = on_disk.config.source
    assert source is not None
    source.write_text("[gateway]\nlisen = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        on_disk.gateway.reload()
    src = tmp_path / "still.txt"
    src.write_text("still works\n")
    assert on_disk.scp(str(src), ":/inbox/").returncode == 0
