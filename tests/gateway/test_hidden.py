"""What a user may not see answers exactly like what does not exist.

A hidden area (no grant) against an area that does not exist, a symbolic link
leaving the area against a missing name: the client-visible answer (SFTP status
and text, legacy SCP error line) must be the same, over real ``sftp``, ``scp``
and ``scp -O``; the journal keeps the real reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.gateway import RunningGateway, random_file

# (hidden path, missing path): the second never exists.
PAIRS = [
    ("/inbox-archive", "/no-such-area"),
    ("/inbox-archive/kept.txt", "/no-such-area/kept.txt"),
    ("/inbox/escape", "/inbox/absent"),  # a link leaving the area
    ("/inbox/pipe", "/inbox/absent"),  # a FIFO: listings hide it
    ("/inbox/escape_dir/secret.txt", "/inbox/absent/secret.txt"),
]


@pytest.fixture
def hidden(gw: RunningGateway) -> RunningGateway:
    outside = gw.root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (gw.area("inbox-archive") / "kept.txt").write_text("archived\n")
    os.symlink(outside / "secret.txt", gw.area("inbox") / "escape")
    os.symlink(outside, gw.area("inbox") / "escape_dir")
    os.mkfifo(gw.area("inbox") / "pipe")
    return gw


def same(a: str, b: str, hidden_path: str, missing_path: str) -> bool:
    def norm(text: str, path: str) -> str:
        return text.replace(path, "PATH").replace(Path(path).name, "NAME")

    return norm(a, hidden_path) == norm(b, missing_path)


SFTP_COMMANDS = ["ls {p}", "ls -l {p}", "cd {p}", "get {p} {tmp}/got", "put {src} {p}/new.txt"]


@pytest.mark.parametrize(("hidden_path", "missing_path"), PAIRS)
@pytest.mark.parametrize("command", SFTP_COMMANDS)
def test_sftp_cannot_tell_hidden_from_missing(
    hidden: RunningGateway, tmp_path: Path, command: str, hidden_path: str, missing_path: str
) -> None:
    src = random_file(tmp_path / "src.txt", 10)
    a = hidden.sftp(command.format(p=hidden_path, tmp=tmp_path, src=src) + "\n")
    b = hidden.sftp(command.format(p=missing_path, tmp=tmp_path, src=src) + "\n")
    assert a.returncode != 0 and b.returncode != 0
    assert same(a.stderr, b.stderr, hidden_path, missing_path), (a.stderr, b.stderr)
    assert same(a.stdout, b.stdout, hidden_path, missing_path), (a.stdout, b.stdout)
    assert not (tmp_path / "got").exists()
    assert sorted(os.listdir(hidden.root / "outside")) == ["secret.txt"]


@pytest.mark.parametrize(("hidden_path", "missing_path"), PAIRS)
def test_scp_cannot_tell_hidden_from_missing(
    hidden: RunningGateway, legacy: bool, tmp_path: Path, hidden_path: str, missing_path: str
) -> None:
    src = random_file(tmp_path / "src.txt", 10)
    transfers = [lambda p: (f":{p}", str(tmp_path / "got"))]  # download
    if hidden_path.startswith("/inbox-archive"):
        # Uploading into a hidden area is refused like one into a missing area.
        # (A name taken by something hidden inside a visible area cannot answer
        # like a free one: that upload would succeed. It is refused instead.)
        transfers.append(lambda p: (str(src), f":{p}/"))
    for args in transfers:
        a = hidden.scp(*args(hidden_path), legacy=legacy)
        b = hidden.scp(*args(missing_path), legacy=legacy)
        assert a.returncode != 0 and b.returncode != 0
        assert same(a.stderr, b.stderr, hidden_path, missing_path), (a.stderr, b.stderr)
    assert not (tmp_path / "got").exists()
    assert (hidden.root / "outside" / "secret.txt").read_text() == "secret\n"
    assert not (hidden.area("inbox-archive") / "src.txt").exists()


def test_journal_keeps_the_real_reason(hidden: RunningGateway, tmp_path: Path) -> None:
    hidden.sftp(f"get /inbox-archive/kept.txt {tmp_path}/a\nget /inbox/escape {tmp_path}/b\n")
    hidden.sftp(f"get /inbox/escape {tmp_path}/b\n")
    reasons = [(e["path"], e["reason"]) for e in hidden.recorder.of("access.denied")]
    assert any(
        p == "/inbox-archive/kept.txt" and "no role of alice grants anything" in r
        for p, r in reasons
    ), reasons
    assert any(p == "/inbox/escape" and "symbolic link leaves the area" in r for p, r in reasons)
