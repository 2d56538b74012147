"""SSH algorithms: modern ones only by default, widened per site on purpose.

Real OpenSSH clients forced to one legacy algorithm (``-o MACs=hmac-sha1``,
``-o KexAlgorithms=diffie-hellman-group14-sha1``, a CBC cipher) are refused
by default and accepted once ``[gateway.crypto]`` allows them; what was
agreed is journalled in ``session.start``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from conduit.cli.check import crypto_lines
from conduit.config import ConfigError, parse
from conduit.config.crypto import DEFAULT_CIPHERS, DEFAULT_KEX, DEFAULT_MACS, effective, weakness
from conduit.site.check import check
from tests.support.gateway import RunningGateway, policy_text

LEGACY = {
    "mac": ("-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha1"),
    "kex": ("-o", "KexAlgorithms=diffie-hellman-group14-sha1"),
    "cbc": ("-o", "Ciphers=aes128-cbc"),
    "md5": ("-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-md5"),
}


def widened(make_gateway: Callable[..., RunningGateway], crypto: str) -> RunningGateway:
    first = make_gateway()
    text = policy_text(first.root, first.keys).replace(
        "[gateway.limits]\n", f"[gateway.crypto]\n{crypto}\n\n[gateway.limits]\n"
    )
    return make_gateway(text=text)


def ssh_verbose(running: RunningGateway, *extra: str) -> subprocess.CompletedProcess[str]:
    """OpenSSH ssh with its negotiation errors shown (LogLevel INFO)."""
    options = running.ssh_options()
    options[options.index("LogLevel=ERROR")] = "LogLevel=INFO"
    argv = ["ssh", "-p", str(running.port), *options, *extra, "alice@127.0.0.1", "true"]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize("forced", sorted(LEGACY))
def test_a_client_forced_to_a_legacy_algorithm_is_refused(gw: RunningGateway, forced: str) -> None:
    result = ssh_verbose(gw, *LEGACY[forced])
    assert result.returncode == 255
    assert "no matching" in result.stderr.lower(), result.stderr
    assert not gw.recorder.of("session.start")


def test_the_default_works_and_is_journalled(gw: RunningGateway) -> None:
    result = gw.sftp("ls /inbox\n")
    assert result.returncode == 0, result.stderr
    start = gw.recorder.of("session.start")[0]
    assert start["kex"] in DEFAULT_KEX
    assert start["host_key_algorithm"] == "ssh-ed25519"
    assert start["cipher"] in DEFAULT_CIPHERS
    assert start["cipher"].endswith("@openssh.com")  # OpenSSH prefers an AEAD cipher ...
    assert start["mac"] is None  # ... which needs no separate MAC


def test_a_widened_site_list_lets_legacy_clients_in(
    make_gateway: Callable[..., RunningGateway],
) -> None:
    running = widened(make_gateway, 'kex = "+diffie-hellman-group14-sha1"\nmacs = ["hmac-sha1"]')
    forced = (*LEGACY["kex"], *LEGACY["mac"])
    result = running.sftp("ls /inbox\n", extra=forced)
    assert result.returncode == 0, result.stderr
    start = running.recorder.of("session.start")[0]
    assert (start["kex"], start["cipher"], start["mac"]) == (
        "diffie-hellman-group14-sha1",
        "aes128-ctr",
        "hmac-sha1",
    )
    # macs replaced the list: a modern MAC is no longer offered.
    result = running.sftp(
        "ls /inbox\n", extra=("-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha2-256")
    )
    assert result.returncode != 0


def test_a_narrowed_site_list_refuses_what_it_removed(
    make_gateway: Callable[..., RunningGateway],
) -> None:
    running = widened(make_gateway, 'ciphers = "-aes128-gcm@openssh.com,aes256-gcm@openssh.com"')
    result = running.sftp("ls /inbox\n", extra=("-o", "Ciphers=aes128-gcm@openssh.com"))
    assert result.returncode != 0
    result = running.sftp("ls /inbox\n")
    assert result.returncode == 0, result.stderr
    assert running.recorder.of("session.start")[0]["cipher"] == "chacha20-poly1305@openssh.com"


@pytest.mark.parametrize(
    ("ciphers", "agreed"),
    [
        # What configuration.md tells a site that wants AES-GCM from stock clients ...
        ('"aes128-gcm@openssh.com,aes256-gcm@openssh.com"', "aes128-gcm@openssh.com"),
        # ... and why taking ChaCha20 out alone is not enough: OpenSSH's next choice.
        ('"-chacha20-poly1305@openssh.com"', "aes128-ctr"),
    ],
)
def test_the_client_order_decides_the_cipher(
    make_gateway: Callable[..., RunningGateway], ciphers: str, agreed: str
) -> None:
    running = widened(make_gateway, f"ciphers = {ciphers}")
    result = running.sftp("ls /inbox\n")
    assert result.returncode == 0, result.stderr
    assert running.recorder.of("session.start")[0]["cipher"] == agreed


def test_defaults_hold_nothing_weak() -> None:
    algs = effective(None)
    assert [n for _, names in algs.items() for n in names if weakness(n)] == []
    assert "hmac-sha1" not in DEFAULT_MACS
    assert not any("sha1" in k or "group14" in k for k in DEFAULT_KEX)


def test_check_warns_about_weak_choices_and_prints_the_lists(tmp_path) -> None:  # type: ignore[no-untyped-def]
    keys = {n: tmp_path / n for n in ("alice", "bob")}
    for key in keys.values():
        key.with_suffix(".pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz0 x\n")
    text = policy_text(tmp_path, keys).replace(
        "[gateway.limits]\n",
        '[gateway.crypto]\nmacs = "+hmac-md5"\nciphers = "+aes128-cbc"\n\n[gateway.limits]\n',
    )
    config = parse(text, source=tmp_path / "conduit.toml")
    warnings = [str(p) for p in check(config) if p.severity == "warning"]
    assert any("hmac-md5 is weak (MD5" in w and "gateway.crypto.macs" in w for w in warnings)
    assert any("aes128-cbc is weak" in w for w in warnings)
    lines = crypto_lines(config)
    assert any(
        line.split()[0] == "macs" and line.endswith("hmac-sha2-512, hmac-md5") for line in lines
    )


def test_an_unknown_algorithm_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    keys = {n: tmp_path / n for n in ("alice", "bob")}
    for key in keys.values():
        key.with_suffix(".pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz0 x\n")
    text = policy_text(tmp_path, keys).replace(
        "[gateway.limits]\n", '[gateway.crypto]\nkex = "+sntrup-typo"\n\n[gateway.limits]\n'
    )
    with pytest.raises(ConfigError, match="sntrup-typo"):
        parse(text, source=tmp_path / "conduit.toml")


def test_an_rsa_host_key_never_signs_with_sha1(
    make_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    key = tmp_path / "host_rsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(key)], check=True
    )
    first = make_gateway()
    text = policy_text(first.root, first.keys).replace(
        'data_dir = "', f'host_keys = ["{key}"]\ndata_dir = "', 1
    )
    running = make_gateway(text=text)
    refused = ssh_verbose(running, "-o", "HostKeyAlgorithms=ssh-rsa")
    assert refused.returncode == 255
    assert "no matching host key" in refused.stderr.lower(), refused.stderr
    assert ssh_verbose(running, "-o", "HostKeyAlgorithms=rsa-sha2-512").returncode != 255
    assert running.recorder.of("session.start")[0]["host_key_algorithm"] == "rsa-sha2-512"
