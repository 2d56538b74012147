"""Must-allow / must-reject paths through both protocols, with the disk checked afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.gateway import RunningGateway, sha256

SECRET = b"outside the area: must never be read or changed\n"


@pytest.fixture
def trap(gw: RunningGateway) -> RunningGateway:
    """An inbox full of links that try to leave it, and a secret outside it."""
    outside = gw.root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    inbox = gw.area("inbox")
    (inbox / "real.txt").write_bytes(b"inside\n")
    (inbox / "sub").mkdir()
    links = {
        "to_etc": "/etc",
        "to_secret": str(outside / "secret.txt"),
        "rel_up": "../../outside/secret.txt",
        "sub/rel_up2": "../../../outside/secret.txt",
        "dangling": str(outside / "new.txt"),
        "dangling_rel": "../../outside/new2.txt",
        "loop_a": "loop_b",
        "loop_b": "loop_a",
        "self": "self",
        "dir_out": str(outside),
        "inside_link": "real.txt",
        "sub/inside_up": "../real.txt",
    }
    for name, target in links.items():
        os.symlink(target, inbox / name)
    os.mkfifo(inbox / "pipe")
    return gw


def outside_untouched(gw: RunningGateway) -> None:
    outside = gw.root / "outside"
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == SECRET


MUST_REJECT_READ = [
    "/inbox/../../../etc/passwd",
    "/inbox/../outbox/../../etc/passwd",
    "/../../etc/passwd",
    "/inbox-archive/anything",
    "/inboxx/real.txt",
    "/INBOX/real.txt",
    "/inbox/to_etc/passwd",
    "/inbox/to_secret",
    "/inbox/rel_up",
    "/inbox/sub/rel_up2",
    "/inbox/dangling",
    "/inbox/loop_a",
    "/inbox/self",
    "/inbox/dir_out/secret.txt",
    "/inbox/pipe",
]


@pytest.mark.parametrize("path", MUST_REJECT_READ)
def test_must_reject_read(trap: RunningGateway, legacy: bool, path: str, tmp_path: Path) -> None:
    dst = tmp_path / "got"
    result = trap.scp(f":{path}", str(dst), legacy=legacy, timeout=20)
    assert result.returncode != 0
    assert not dst.exists() or dst.read_bytes() != SECRET
    assert str(trap.root) not in result.stderr
    outside_untouched(trap)


MUST_REJECT_WRITE = [
    "/inbox/dangling",
    "/inbox/dangling_rel",
    "/inbox/dir_out/new.txt",
    "/inbox/to_etc/conduit-test",
    "/inbox/../../../tmp/escape.txt",
    "/outbox/x.txt",
    "/inbox-archive/x.txt",
    "/x.txt",
    "/inbox/pipe",
]


@pytest.mark.parametrize("path", MUST_REJECT_WRITE)
def test_must_reject_write(trap: RunningGateway, legacy: bool, path: str, tmp_path: Path) -> None:
    src = tmp_path / "payload"
    src.write_bytes(b"payload\n")
    result = trap.scp(str(src), f":{path}", legacy=legacy, timeout=20)
    assert result.returncode != 0, f"{path} was accepted"
    assert str(trap.root) not in result.stderr
    outside_untouched(trap)
    assert not Path("/etc/conduit-test").exists()
    assert not Path("/tmp/escape.txt").exists()


def test_write_through_link_to_outside_file_never_touches_it(
    trap: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    src = tmp_path / "payload"
    src.write_bytes(b"overwrite attempt\n")
    trap.scp(str(src), ":/inbox/to_secret", legacy=legacy, timeout=20)
    trap.scp(str(src), ":/inbox/rel_up", legacy=legacy, timeout=20)
    outside_untouched(trap)


MUST_ALLOW_READ = {
    "/inbox/real.txt": b"inside\n",
    "/inbox/inside_link": b"inside\n",
    "/inbox/sub/inside_up": b"inside\n",
    "/inbox/sub/../real.txt": b"inside\n",
    "//inbox//real.txt": b"inside\n",
    "/outbox/../inbox/real.txt": b"inside\n",
}


@pytest.mark.parametrize("path", sorted(MUST_ALLOW_READ))
def test_must_allow_read(trap: RunningGateway, legacy: bool, path: str, tmp_path: Path) -> None:
    dst = tmp_path / "got"
    result = trap.scp(f":{path}", str(dst), legacy=legacy, timeout=20)
    assert result.returncode == 0, result.stderr
    assert dst.read_bytes() == MUST_ALLOW_READ[path]


@pytest.mark.parametrize(
    "name",
    [
        "with space.bin",
        "quote'and\"dq.bin",
        "semi;colon$(id)`id`.bin",
        "-leading-dash.bin",
        "ünïcödé-名前.bin",
        "a" * 255,
    ],
)
def test_must_allow_awkward_names(
    gw: RunningGateway, legacy: bool, name: str, tmp_path: Path
) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1000))
    # A real sshd would hand the legacy SCP path to a shell; the gateway has
    # none, so quote for the shell the client thinks is there.
    remote = name if not legacy else "'" + name.replace("'", "'\\''") + "'"
    result = gw.scp(str(src), f":/inbox/{remote}", legacy=legacy, timeout=20)
    if legacy and any(ch in name for ch in "$`"):
        # A real sshd hands this command line to a shell, which would expand
        # $(id) and `id`; the gateway has no shell, so it refuses the command
        # rather than guess. SFTP mode (above) carries such names unharmed.
        assert result.returncode != 0 and "shell syntax" in result.stderr
        assert os.listdir(gw.area("inbox")) == []
        return
    assert result.returncode == 0, result.stderr
    assert sha256(gw.area("inbox") / name) == sha256(src)


def test_listing_hides_nothing_real_and_no_hang(trap: RunningGateway) -> None:
    result = trap.sftp("ls -l /inbox\n", timeout=20)
    assert result.returncode == 0, result.stderr
    assert "real.txt" in result.stdout
    assert str(trap.root) not in result.stdout + result.stderr
    assert ".conduit" not in result.stdout


def test_name_too_long_is_a_clear_error(gw: RunningGateway, legacy: bool, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    result = gw.scp(str(src), ":/inbox/" + "a" * 256, legacy=legacy, timeout=20)
    assert result.returncode != 0
    # OpenSSH's SFTP client prints only the status name; scp -O prints our text.
    assert ("too long" if legacy else "Failure") in result.stderr
    assert os.listdir(gw.area("inbox")) == []
