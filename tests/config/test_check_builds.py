"""``conduit check`` builds what ``conduit serve`` builds: what one refuses, so does the other.

Each broken file is a valid site (tests/config/site.py) broken one way. Both
commands run for real: ``check`` in-process, ``serve`` as its own process,
which must exit 1 at once with the same line (file, line, key), no
traceback, and before making any folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conduit.cli.main import main
from tests.config.site import make_site
from tests.support.gateway import conduit_env

UNSET_ENV = "CONDUIT_TEST_NEVER_SET_PASSWORD"


@dataclass(frozen=True)
class Broken:
    """One way to break the valid site: edit its text (and files), expect one line."""

    edit: Callable[[str, Path], str]
    line: str  # what check and serve must print after "FILE: "


def replace(old: str, new: str) -> Callable[[str, Path], str]:
    def edit(text: str, _base: Path) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


def drop_line(start: str) -> Callable[[str, Path], str]:
    def edit(text: str, _base: Path) -> str:
        lines = text.splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith(start)]
        assert len(kept) == len(lines) - 1, start
        return "".join(kept)

    return edit


def host_key_garbage(text: str, _base: Path) -> str:
    lines = text.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.startswith("host_key ="))
    lines[index] = 'host_key = "ssh-ed25519 garbage"\n'
    return "".join(lines)


def user_key_malformed(text: str, _base: Path) -> str:
    return text.replace('keys = ["ssh-ed25519 AAAA', 'keys = ["ssh-ed25519 AAAB', 1)


def known_hosts_for(host: str) -> Callable[[str, Path], str]:
    """Trust the device through a known_hosts file that lists ``host``."""

    def edit(text: str, base: Path) -> str:
        line = next(x for x in text.splitlines() if x.startswith("host_key ="))
        key = line.split('"')[1]
        (base / "keys" / "known_hosts").write_text(f"{host} {key}\n")
        return text.replace(line, 'known_hosts = "keys/known_hosts"')

    return edit


def identity_not_a_key(text: str, base: Path) -> str:
    (base / "keys" / "plc-01").write_text("not a key\n")
    return text


BROKEN = {
    # A device serve cannot use.
    "relative-root": Broken(
        replace('root = "/srv/plc"', 'root = "srv/plc"'),
        "line 23: devices.plc-01.root: 'srv/plc' must be an absolute path",
    ),
    "missing-identity": Broken(
        replace('identity = "keys/plc-01"', 'identity = "keys/nothere"'),
        "line 21: devices.plc-01.identity: {base}/keys/nothere: no such file",
    ),
    "identity-not-a-key": Broken(
        identity_not_a_key,
        "line 21: devices.plc-01.identity: {base}/keys/plc-01: not an OpenSSH private key",
    ),
    "no-credentials": Broken(
        drop_line("identity ="),
        "line 17: devices.plc-01: no credentials: set identity, password_file or password_env",
    ),
    "unset-password-env": Broken(
        replace('identity = "keys/plc-01"', f'password_env = "{UNSET_ENV}"'),
        f"line 21: devices.plc-01.password_env: environment variable {UNSET_ENV} is not set",
    ),
    "no-host-key": Broken(
        drop_line("host_key ="),
        "line 17: devices.plc-01: no host key to check the device against",
    ),
    "host-key-garbage": Broken(
        host_key_garbage, "line 22: devices.plc-01.host_key: not an OpenSSH public key"
    ),
    "address-without-port": Broken(
        replace('"192.168.0.10:22"', '"192.168.0.10"'),
        "line 19: devices.plc-01.address: must be HOST:PORT",
    ),
    "unknown-placeholder": Broken(
        replace("sha256sum -- {path}", "sha256sum -- {file}"),
        "line 24: devices.plc-01.commands.sha256: command 'sha256' may only use {path}",
    ),
    "known-hosts-without-the-device": Broken(
        known_hosts_for("192.168.0.99"),
        "line 22: devices.plc-01.known_hosts: {base}/keys/known_hosts"
        " has no host key for 192.168.0.10",
    ),
    # Keys and files of the gateway itself.
    "malformed-user-key": Broken(
        user_key_malformed, "line 33: users.alice.keys[0]: not an OpenSSH public key"
    ),
    "missing-host-keys-file": Broken(
        replace('host_keys = ["keys/host_ed25519"]', 'host_keys = ["keys/missing"]'),
        "line 3: gateway.host_keys[0]: {base}/keys/missing: no such file",
    ),
    "not-toml": Broken(
        replace("level = 4", "level = = 4"),
        "line 6: not valid TOML: Invalid value (column 9)",
    ),
    "empty-file": Broken(
        lambda _text, _base: "# nothing yet\n", "line 1: (file): the file is empty"
    ),
    # Values read strictly and explained in words.
    "size-with-junk": Broken(
        replace('max_size = "512MiB"', 'max_size = "600 MB?"'),
        "line 41: conduits[0].max_size: '600 MB?' is not a size",
    ),
    "cidr-host-bits": Broken(
        replace('"10.10.0.0/16"', '"10.10.0.1/16"'),
        "line 7: zones.enterprise.networks[0]: '10.10.0.1/16' has host bits set:"
        " the network is 10.10.0.0/16",
    ),
    "cidr-not-a-network": Broken(
        replace('"10.10.0.0/16"', '"10.10.0.0/33"'),
        "line 7: zones.enterprise.networks[0]: '10.10.0.0/33' is not a network",
    ),
    # One typo, one error.
    "misspelt-key": Broken(
        replace("level = 4", "levle = 4"),
        "line 6: zones.enterprise.levle: unknown key (did you mean 'level'?)",
    ),
    "misspelt-optional-key": Broken(
        replace('networks = ["10.10', 'network = ["10.10'),
        "line 7: zones.enterprise.network: unknown key (did you mean 'networks'?)",
    ),
    "misspelt-zone-name": Broken(
        replace("[zones.control]", "[zones.contrl]"),
        "line 14: areas.firmware.zone: unknown zone 'control' (zones: contrl, enterprise);"
        " also used at devices.plc-01.zone, conduits[0].to",
    ),
    "misspelt-role": Broken(
        replace('roles = ["engineer"]', 'roles = ["enginer"]'),
        "line 34: users.alice.roles: unknown role 'enginer' (roles: engineer)",
    ),
    "misspelt-area": Broken(
        replace("[areas.firmware]", "[areas.firmwre]"),
        "line 28: roles.engineer.grants[0].target: unknown area 'firmware' (areas: firmwre)",
    ),
}


def expected(name: str, base: Path) -> str:
    return BROKEN[name].line.replace("{base}", str(base))


def broken_site(tmp_path: Path, case: Broken) -> Path:
    path = make_site(tmp_path)
    path.write_text(case.edit(path.read_text(), tmp_path))
    return path


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_reports_one_error_with_line_and_key(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(UNSET_ENV, raising=False)
    path = broken_site(tmp_path, BROKEN[name])
    code = main(["check", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"{path}: {expected(name, tmp_path)}" in out, out
    assert f"{path}: 1 error; the policy is not usable" in out, out
    assert "lax-or-strict" not in out and "Value error" not in out and "Zones" not in out


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_serve_refuses_the_same_file_with_the_same_line(name: str, tmp_path: Path) -> None:
    path = broken_site(tmp_path, BROKEN[name])
    env = {k: v for k, v in conduit_env().items() if k != UNSET_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "conduit", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{path}: {expected(name, tmp_path)}" in done.stderr, done.stderr
    assert "the gateway did not start" in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before making anything


def test_a_file_that_passes_check_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_site(tmp_path)
    assert main(["check", "--config", str(path)]) == 0
    assert f"{path}: OK" in capsys.readouterr().out
    process = subprocess.Popen(
        [sys.executable, "-m", "conduit", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=conduit_env(),
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("Conduit gateway listening on 127.0.0.1:"), first
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err


def test_warnings_stay_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_site(tmp_path)
    path.write_text(
        path.read_text() + '\n[roles.spare]\ngrants = [{ target = "firmware", ops = ["list"] }]\n'
    )
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: roles.spare: no user has this role" in out
    assert f"{path}: OK" in out


def test_every_problem_is_listed_not_just_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(UNSET_ENV, raising=False)
    path = make_site(tmp_path)
    text = path.read_text()
    for name in ("relative-root", "host-key-garbage", "malformed-user-key", "misspelt-role"):
        text = BROKEN[name].edit(text, tmp_path)
    path.write_text(text)
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    for name in ("relative-root", "host-key-garbage", "malformed-user-key", "misspelt-role"):
        assert BROKEN[name].line in out, name
    assert "4 errors; the policy is not usable" in out


def test_explain_reads_sizes_strictly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_site(tmp_path)
    argv = ["explain", "alice", "write", "/firmware/a.bin", "--from", "10.10.0.1"]
    code = main([*argv, "--size", "600 MB?", "--config", str(path)])
    assert code == 2 and "--size: '600 MB?'" in capsys.readouterr().err
    code = main([*argv, "--size", "600MB", "--config", str(path)])
    assert code in (0, 1) and "Traceback" not in capsys.readouterr().err


def test_load_checked_raises_what_check_prints(tmp_path: Path) -> None:
    from conduit.config import ConfigError
    from conduit.site.build import load_checked

    path = broken_site(tmp_path, BROKEN["relative-root"])
    with pytest.raises(ConfigError) as info:
        load_checked(path)
    assert info.value.problems == [BROKEN["relative-root"].line + " on the device"]
    assert load_checked(make_site(tmp_path / "good")).devices["plc-01"].root == "/srv/plc"


def test_process_exit_is_quick_even_for_many_problems(tmp_path: Path) -> None:
    """A policy with many broken devices still fails fast and line by line."""
    path = make_site(tmp_path)
    extra = "".join(
        f'\n[devices.d{i}]\nzone = "control"\naddress = "10.0.0.{i}"\nuser = "u"\n'
        for i in range(50)
    )
    path.write_text(path.read_text() + extra)
    done = subprocess.run(
        [sys.executable, "-m", "conduit", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        env=conduit_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("must be HOST:PORT") == 50
    assert "150 errors" in done.stderr
    assert os.path.exists(path)


def test_a_device_trusted_through_known_hosts_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_site(tmp_path)
    path.write_text(known_hosts_for("192.168.0.10")(path.read_text(), tmp_path))
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().out
