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


def test_conduit_reload_reaches_a_real_gateway(keys: dict[str, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.gateway import conduit_env, random_file, scp_argv, serve_process

    root = tmp_path / "site"
    root.mkdir()
    config = root / "conduit.toml"
    text = policy_text(root, keys)
    config.write_text(text)
    gateway, port, known = serve_process(config)
    try:

        def upload(name: str) -> int:
            src = random_file(tmp_path / name, 1000)
            return subprocess.run(
                scp_argv(
                    port, known, keys["alice"], "-O", str(src), f"alice@127.0.0.1:/inbox/{name}"
                ),
                capture_output=True,
                timeout=30,
            ).returncode

        def reload() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "conduit", "reload", "--config", str(config)],
                capture_output=True,
                text=True,
                env=conduit_env(),
                timeout=30,
            )

        assert upload("before.bin") == 0
        config.write_text(
            text.replace('"list", "read", "write", "mkdir", "rename", "delete"', '"list", "read"')
        )
        assert reload().returncode == 0  # answered once the new policy is in force
        assert upload("refused.bin") != 0
        assert not (root / "areas" / "inbox" / "refused.bin").exists()
        config.write_text("[gateway]\nlisen = 1\n")
        bad = reload()
        assert bad.returncode == 1 and "unknown key" in bad.stdout + bad.stderr
        assert upload("still-refused.bin") != 0  # the last good policy stays in force
        assert gateway.poll() is None
    finally:
        gateway.terminate()
        gateway.wait(15)


def test_reload_checks_run_off_the_event_loop(
    on_disk: RunningGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload whose checks hang (a stuck ``gpg --import``) must not stall the
    sessions already served: the file is built in a thread, only the swap runs
    on the loop, and the reload still lands once the checks return."""
    import asyncio
    import threading

    from conduit.gateway import app

    entered, release = threading.Event(), threading.Event()
    real_build = app.build

    def hanging_build(path: Path | str) -> object:
        entered.set()
        assert release.wait(30), "the test never released the hanging check"
        return real_build(path)

    monkeypatch.setattr(app, "build", hanging_build)
    pending = asyncio.run_coroutine_threadsafe(
        on_disk.gateway.reload_policy(via="test"), on_disk.loop
    )
    try:
        assert entered.wait(10)
        src = tmp_path / "during.txt"
        src.write_text("served while the reload waits\n")
        assert on_disk.scp(str(src), ":/inbox/", timeout=20).returncode == 0
        assert not pending.done()
    finally:
        release.set()
    assert pending.result(30).applied
    assert (on_disk.area("inbox") / "during.txt").read_text() == src.read_text()
