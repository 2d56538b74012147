"""The gateway presents an OpenSSH host certificate: a client that trusts the
host CA (``@cert-authority`` in known_hosts) connects with
StrictHostKeyChecking=yes and no prior host key; one trusting another CA
cannot. ``conduit check`` refuses certificates that would not work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conduit.config import parse
from conduit.site.build import inspect
from tests.support.gateway import make_key, policy_text, start_gateway, stop_gateway


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def signed(tmp_path: Path) -> dict[str, Path]:
    host_ca = make_key(tmp_path, "host_ca")
    other_ca = make_key(tmp_path, "other_ca")
    host = make_key(tmp_path, "host_ed25519")
    # the command the README documents
    keygen(
        "-s",
        str(host_ca),
        "-I",
        "gateway1",
        "-h",
        "-n",
        "127.0.0.1",
        "-V",
        "-5m:+52w",
        f"{host}.pub",
    )
    return {
        "host_ca": host_ca,
        "other_ca": other_ca,
        "host": host,
        "cert": Path(f"{host}-cert.pub"),
    }


def _policy(tmp_path: Path, keys: dict[str, Path], host: Path, cert: Path) -> Path:
    root = tmp_path / "gw"
    root.mkdir(exist_ok=True)
    text = policy_text(root, keys).replace(
        f'data_dir = "{root}/data"',
        f'data_dir = "{root}/data"\nhost_keys = ["{host}"]\nhost_certificates = ["{cert}"]',
    )
    policy = root / "conduit.toml"
    policy.write_text(text)
    return policy


@pytest.mark.parametrize("trusted", ["host_ca", "other_ca"])
def test_client_trusting_the_host_ca_connects(
    tmp_path: Path, keys: dict[str, Path], signed: dict[str, Path], trusted: str
) -> None:
    policy = _policy(tmp_path, keys, signed["host"], signed["cert"])
    gw = start_gateway(parse(policy.read_text(), source=policy), keys, policy.parent)
    try:
        ca_line = Path(f"{signed[trusted]}.pub").read_text().strip()
        gw.known_hosts.write_text(f"@cert-authority [127.0.0.1]:* {ca_line}\n")
        result = gw.sftp("ls /\n")
        if trusted == "host_ca":
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode != 0
            assert "Host key verification failed" in result.stderr
            assert not gw.recorder.of("session.start")
    finally:
        stop_gateway(gw)


def test_check_refuses_certificates_that_cannot_work(
    tmp_path: Path, keys: dict[str, Path], signed: dict[str, Path]
) -> None:
    stranger = make_key(tmp_path, "stranger")
    keygen("-s", str(signed["host_ca"]), "-I", "x", "-h", "-n", "127.0.0.1", f"{stranger}.pub")
    user = make_key(tmp_path, "usercert")
    keygen("-s", str(signed["host_ca"]), "-I", "u", "-n", "alice", f"{user}.pub")
    cases = {
        Path(f"{stranger}-cert.pub"): "certifies none of the gateway's host keys",
        Path(f"{user}-cert.pub"): "a user certificate, not a host one",
        tmp_path / "missing-cert.pub": "no such file",
        Path(f"{signed['host']}.pub"): "not an OpenSSH certificate",
    }
    for cert, message in cases.items():
        report = inspect(_policy(tmp_path, keys, signed["host"], cert))
        assert any(
            "gateway.host_certificates[0]" in line and message in line for line in report.errors
        ), (message, report.errors)
