"""``conduit cp`` as a user runs it, against real sshd devices (in-process, and as a process)."""

from __future__ import annotations

import hashlib
import io
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conduit.cli.main import main
from tests.storage.relay.sshd import Sshd
from tests.support.gateway import conduit_env

from .conftest import Devices


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def options(devices: Devices, sshd: Sshd | None) -> list[str]:
    found = ["-i", str(devices.identity), "-F", "/dev/null", "--timeout", "20"]
    if sshd is not None:
        found += ["-P", str(sshd.port), "--host-key", sshd.host_key]
    return found


def process(
    devices: Devices, sshd: Sshd | None, *args: str, limit_file: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``conduit cp`` as its own process (``limit_file``: a disk that fills up)."""

    def preexec() -> None:
        if limit_file is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file, limit_file))

    env = {k: v for k, v in conduit_env().items() if k != "SSH_AUTH_SOCK"}
    return subprocess.run(
        [sys.executable, "-m", "conduit", "cp", *options(devices, sshd), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        preexec_fn=preexec,
    )


@pytest.fixture
def cp(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``conduit cp`` in this process (a process per call costs seconds on a busy machine)."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    def run(devices: Devices, sshd: Sshd | None, *args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        code = main(["cp", *options(devices, sshd), *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["conduit", "cp", *args], code, out, err)

    return run


CP = Callable[..., subprocess.CompletedProcess[str]]


def one_line_error(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conduit: ") and words in lines[0], lines
    assert "Traceback" not in result.stderr


def test_wrong_host_key_unreachable_and_silent_hosts(
    cp: CP, devices: Devices, tmp_path: Path
) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"a")
    wrong = cp(devices, None, "-P", str(devices.sftp.port), "--host-key", devices.scp.host_key,
               str(source), f"root@127.0.0.1:{tmp_path}/b.bin")  # fmt: skip
    one_line_error(wrong, "host key not verified")
    refused = cp(devices, None, "-P", str(devices.closed), str(source), "127.0.0.1:/tmp/x")
    one_line_error(refused, "connection refused")
    silent = cp(devices, None, "-P", str(devices.hang), "--timeout", "1", str(source),
                "127.0.0.1:/tmp/x")  # fmt: skip
    one_line_error(silent, "timed out")
    unknown = cp(devices, None, str(source), "no-such-host.invalid:/tmp/x")
    one_line_error(unknown, "no-such-host.invalid")
    assert not (tmp_path / "b.bin").exists()


def test_a_key_the_device_refuses(cp: CP, devices: Devices, tmp_path: Path) -> None:
    result = cp(devices, devices.sftp, "-i", str(devices.stranger), f"root@127.0.0.1:{tmp_path}",
                str(tmp_path / "x"))  # fmt: skip
    one_line_error(result, "permission denied")


def test_user_mistakes_are_one_line(cp: CP, devices: Devices, tmp_path: Path) -> None:
    one_line_error(cp(devices, None, "a", "b"), "both sides are local")
    one_line_error(cp(devices, None, "h1:/a", "h2:/b"), "two remote hosts")
    one_line_error(cp(devices, None, "h1:/a", "h2:/b", str(tmp_path)), "same host")
    one_line_error(cp(devices, None, str(tmp_path / "absent"), "h:/x"), "no such file")
    one_line_error(cp(devices, None, "-l", "0", str(tmp_path), "h:/x"), "above 0 kbit/s")
    one_line_error(cp(devices, None, "-c", "rot13", str(tmp_path), "h:/x"), "-c rot13: ")


def test_one_missing_source_fails_the_job_but_not_the_others(
    cp: CP, devices: Devices, tmp_path: Path
) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(os.urandom(5000))
    out = tmp_path / "out"
    out.mkdir()
    result = cp(devices, devices.sftp, f"root@127.0.0.1:{tmp_path}/missing.bin",
                f"root@127.0.0.1:{good}", str(out))  # fmt: skip
    one_line_error(result, "missing.bin: no such file")
    assert result.stdout == f"{sha(good)}  {out / 'good.bin'}\n"
    assert sorted(p.name for p in out.iterdir()) == ["good.bin"]


def test_a_local_disk_that_fills_up_leaves_nothing(devices: Devices, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4 << 20))
    out = tmp_path / "out"
    out.mkdir()
    result = process(devices, devices.sftp, f"root@127.0.0.1:{big}", str(out), limit_file=1 << 20)
    one_line_error(result, "File too large")
    assert list(out.iterdir()) == []


def test_recursive_upload_and_download_print_sha256_lines(
    cp: CP, devices: Devices, tmp_path: Path
) -> None:
    tree = tmp_path / "logs"
    (tree / "old").mkdir(parents=True)
    (tree / "now.log").write_bytes(os.urandom(70_000))
    (tree / "old" / "then.log").write_bytes(os.urandom(1000))
    far = tmp_path / "far"
    far.mkdir()
    for sshd in (devices.sftp, devices.scp):
        dest = far / sshd.workdir.name
        dest.mkdir()
        up = cp(devices, sshd, "-r", "-p", "-q", str(tree), f"root@127.0.0.1:{dest}/")
        assert up.returncode == 0, up.stderr
        assert sorted(up.stdout.splitlines()) == sorted(
            f"{sha(p)}  {dest / 'logs' / p.relative_to(tree)}" for p in tree.rglob("*.log")
        )
        back = tmp_path / f"back-{sshd.workdir.name}"
        down = cp(devices, sshd, "-r", f"root@127.0.0.1:{dest}/logs", str(back))
        assert down.returncode == 0, down.stderr
        assert sha(back / "old" / "then.log") == sha(tree / "old" / "then.log")
        assert down.stderr == ""  # not a terminal: no bars


def test_verify_resume_limit_and_jump(cp: CP, devices: Devices, tmp_path: Path) -> None:
    source = tmp_path / "fw.bin"
    source.write_bytes(os.urandom(600_000))
    far = f"root@127.0.0.1:{tmp_path}/fw.bin"
    up = cp(devices, devices.sftp, "--verify", "-l", "100000", "-c", "aes128-ctr", str(source),
            f"{far}.copy")  # fmt: skip
    assert up.returncode == 0 and up.stdout.endswith("(verified)\n"), up
    summed = cp(devices, devices.scp, "--verify", "--remote-hash", "sha256sum", str(source),
                f"root@127.0.0.1:{tmp_path}/summed.bin")  # fmt: skip
    assert summed.stdout == f"{sha(source)}  {tmp_path}/summed.bin  (verified)\n", summed
    target = tmp_path / "resumed.bin"
    (tmp_path / ".resumed.bin.conduit-part").write_bytes(source.read_bytes()[:250_000])
    down = cp(devices, devices.sftp, "--resume", far, str(target))
    assert down.returncode == 0 and "(resumed at 250000)" in down.stdout, down
    assert sha(target) == sha(source)
    known = str(known_hosts(devices, tmp_path))
    jumped = cp(devices, devices.sftp, "-J", f"root@127.0.0.1:{devices.scp.port}",
                "--known-hosts", known, far, str(tmp_path / "j"))  # fmt: skip
    # The pinned key is the device's; the jump host is checked against known_hosts.
    assert jumped.returncode == 0, jumped.stderr
    assert sha(tmp_path / "j") == sha(source)


def known_hosts(devices: Devices, folder: Path) -> Path:
    path = folder / "known_hosts"
    path.write_text(
        "".join(f"[127.0.0.1]:{d.port} {d.host_key}\n" for d in (devices.sftp, devices.scp))
    )
    return path


def test_far_names_are_escaped_in_error_lines(cp: CP, devices: Devices, tmp_path: Path) -> None:
    result = cp(
        devices, devices.sftp, f"root@127.0.0.1:{tmp_path}/\x1b[31mred\u202e.bin", str(tmp_path)
    )
    one_line_error(result, "\\x1b[31mred\\u202e.bin: no such file")
    assert "\x1b" not in result.stderr and "\u202e" not in result.stderr


def test_bars_follow_files_and_the_job() -> None:
    """The bars' arithmetic, with a real rich Progress (not rendered: no terminal)."""
    from rich.console import Console
    from rich.progress import Progress

    from conduit.cli.cp import Bars

    with Progress(console=Console(file=io.StringIO()), disable=True) as progress:
        bars = Bars(progress, None)  # a download: sizes learnt per file
        bars.update("a", 10, 100)
        bars.update("a", 100, 100)
        bars.update("b", 50, 50)
        job = progress.tasks[0]
        assert (job.completed, job.total) == (150, 150)
        assert [t.description for t in progress.tasks] == ["total", "b"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("host:/p", (None, "host", "/p")),
        ("ops@rtu-01:fw.bin", ("ops", "rtu-01", "fw.bin")),
        ("host:", (None, "host", "")),
        ("[fd00::1]:/cfg", (None, "fd00::1", "/cfg")),
        ("./a:b", None),
        ("/abs/x:y", None),
        ("plain", None),
    ],
)
def test_remote_specs_read_as_scp_reads_them(spec: str, expected: object) -> None:
    from conduit.client import parse_remote

    assert parse_remote(spec) == expected
