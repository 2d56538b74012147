"""Real OpenSSH clients move files through the gateway; the disk and the bytes are checked."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.gateway import RunningGateway, random_file, sha256, wait_for


def test_upload_lands_byte_exact_and_is_recorded(
    gw: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "fw.bin", 3 * 1024 * 1024 + 17)
    result = gw.scp(str(src), ":/inbox/", legacy=legacy)
    assert result.returncode == 0, result.stderr
    landed = gw.area("inbox") / "fw.bin"
    assert sha256(landed) == sha256(src)
    assert os.listdir(gw.area("inbox")) == ["fw.bin"]  # no temp file left behind
    done = gw.recorder.of("file.upload", "success")
    assert [(e["path"], e["bytes"], e["sha256"]) for e in done] == [
        ("/inbox/fw.bin", src.stat().st_size, sha256(src))
    ]
    assert done[0]["protocol"] == ("scp" if legacy else "sftp")


def test_download_is_byte_exact_and_hashed(
    gw: RunningGateway, legacy: bool, tmp_path: Path
) -> None:
    src = random_file(gw.area("outbox") / "report.csv", 1024 * 1024 + 3)
    dst = tmp_path / "got.csv"
    result = gw.scp(":/outbox/report.csv", str(dst), legacy=legacy)
    assert result.returncode == 0, result.stderr
    assert sha256(dst) == sha256(src)
    done = gw.recorder.of("file.download", "success")
    assert [(e["path"], e["sha256"]) for e in done] == [("/outbox/report.csv", sha256(src))]


def test_empty_file_round_trip(gw: RunningGateway, legacy: bool, tmp_path: Path) -> None:
    src = tmp_path / "empty.txt"
    src.write_bytes(b"")
    assert gw.scp(str(src), ":/inbox/empty.txt", legacy=legacy).returncode == 0
    assert (gw.area("inbox") / "empty.txt").read_bytes() == b""
    back = tmp_path / "back.txt"
    assert gw.scp(":/inbox/empty.txt", str(back), legacy=legacy).returncode == 0
    assert back.read_bytes() == b""


def test_overwrite_replaces_whole_file(gw: RunningGateway, legacy: bool, tmp_path: Path) -> None:
    (gw.area("inbox") / "cfg.txt").write_bytes(b"old contents that are longer than new\n")
    src = tmp_path / "cfg.txt"
    src.write_bytes(b"new\n")
    assert gw.scp(str(src), ":/inbox/cfg.txt", legacy=legacy).returncode == 0
    assert (gw.area("inbox") / "cfg.txt").read_bytes() == b"new\n"


def test_recursive_tree_both_ways(gw: RunningGateway, legacy: bool, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    files = [random_file(tree / f"d{i % 3}" / f"f{i}.dat", 1000 + i) for i in range(12)]
    result = gw.scp("-r", str(tree), ":/inbox/", legacy=legacy)
    assert result.returncode == 0, result.stderr
    for f in files:
        assert sha256(gw.area("inbox") / "tree" / f.relative_to(tree)) == sha256(f)
    back = tmp_path / "back"
    result = gw.scp("-r", ":/inbox/tree", str(back), legacy=legacy)
    assert result.returncode == 0, result.stderr
    for f in files:
        assert sha256(back / f.relative_to(tree)) == sha256(f)


def test_preserve_times(gw: RunningGateway, legacy: bool, tmp_path: Path) -> None:
    src = random_file(tmp_path / "old.log", 100)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    assert gw.scp("-p", str(src), ":/inbox/", legacy=legacy).returncode == 0
    assert int((gw.area("inbox") / "old.log").stat().st_mtime) == 1_600_000_000


def test_sftp_batch_operations(gw: RunningGateway, tmp_path: Path) -> None:
    src = random_file(tmp_path / "a.bin", 70_000)
    batch = f"""
mkdir /inbox/sub
put {src} /inbox/sub/a.bin
rename /inbox/sub/a.bin /inbox/sub/b.bin
get /inbox/sub/b.bin {tmp_path}/b.bin
ls -l /inbox/sub
rm /inbox/sub/b.bin
rmdir /inbox/sub
"""
    result = gw.sftp(batch)
    assert result.returncode == 0, result.stderr
    assert sha256(tmp_path / "b.bin") == sha256(src)
    assert "b.bin" in result.stdout
    assert not (gw.area("inbox") / "sub").exists()
    types = [e["type"] for e in gw.recorder.events if e["outcome"] == "success"]
    for expected in (
        "dir.create",
        "file.upload",
        "file.rename",
        "file.download",
        "file.delete",
        "dir.delete",
    ):
        assert expected in types


def test_root_lists_only_granted_areas(gw: RunningGateway) -> None:
    result = gw.sftp("ls /\n")
    assert result.returncode == 0, result.stderr
    names = result.stdout.split()
    assert "/inbox" in names and "/outbox" in names
    assert "/inbox-archive" not in names  # an area alice has no grant on
    result = gw.sftp("ls /\n", user="bob")
    assert "/outbox" not in result.stdout.split()


def test_cd_and_relative_paths(gw: RunningGateway, tmp_path: Path) -> None:
    src = random_file(tmp_path / "rel.bin", 5000)
    result = gw.sftp(f"cd inbox\nput {src}\ncd ..\ncd ../../inbox\nls\n")
    assert result.returncode == 0, result.stderr
    assert sha256(gw.area("inbox") / "rel.bin") == sha256(src)


def test_tilde_means_virtual_root(gw: RunningGateway, legacy: bool, tmp_path: Path) -> None:
    src = random_file(tmp_path / "t.bin", 10)
    assert gw.scp(str(src), ":~/inbox/t.bin", legacy=legacy).returncode == 0
    assert (gw.area("inbox") / "t.bin").exists()


def test_scp_glob_download(gw: RunningGateway, tmp_path: Path) -> None:
    for name in ("a.log", "b.log", "c.txt"):
        (gw.area("outbox") / name).write_text(name)
    out = tmp_path / "out"
    out.mkdir()
    result = gw.scp(":/outbox/*.log", str(out), legacy=True)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["a.log", "b.log"]


def test_session_events_carry_identity_and_traffic(gw: RunningGateway, tmp_path: Path) -> None:
    src = random_file(tmp_path / "t.bin", 123_456)
    assert gw.scp(str(src), ":/inbox/").returncode == 0
    assert gw.scp(":/inbox/t.bin", str(tmp_path / "back.bin")).returncode == 0
    ends = wait_for(
        lambda: len(gw.recorder.of("session.end")) == 2 and gw.recorder.of("session.end")
    )
    assert [(e["bytes_in"], e["bytes_out"]) for e in ends] == [(123_456, 0), (0, 123_456)]
    start = gw.recorder.of("session.start")[0]
    assert start["principal"] == "alice" and start["auth_method"] == "publickey"
    assert start["key_fingerprint"].startswith("SHA256:") and start["zone"] == "local"
    assert start["client_version"].startswith("SSH-2.0-OpenSSH")


def test_sftp_df_reports_the_areas_space(gw: RunningGateway) -> None:
    """OpenSSH's ``df`` (statvfs@openssh.com) works in an area and names no host path."""
    result = gw.sftp("df /inbox\n")
    assert result.returncode == 0, result.stderr
    vfs = os.statvfs(gw.area("inbox"))
    size_kib = vfs.f_blocks * vfs.f_frsize // 1024
    assert str(size_kib) in result.stdout, result.stdout
    assert gw.sftp("df /nowhere\n").returncode != 0
