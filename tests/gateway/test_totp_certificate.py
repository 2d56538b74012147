"""A certificate is a first factor like a key: the second factor still applies.

A site that hands out OpenSSH certificates and demands a code from the office
network must not find that a certificate skips the code. Real OpenSSH
``sftp`` logs in with a certificate signed by ``ssh-keygen`` and answers the
prompt through ``SSH_ASKPASS``; without the right code nothing is logged in.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from conduit.auth.secrets import SecretStore
from conduit.auth.totp import STEP
from conduit.config import parse
from tests.support import askpass
from tests.support.gateway import RunningGateway, make_key, start_gateway, stop_gateway


def policy(root: Path, ca: Path) -> str:
    return f"""
[gateway]
listen = "127.0.0.1:0"
data_dir = "{root}/data"

[gateway.limits]
idle_timeout = 0

[auth]
trusted_user_ca_keys = ["{ca}.pub"]

[auth.second_factor]
totp_zones = ["office"]

[zones.office]
level = 4
networks = ["127.0.0.1/32"]

[areas.inbox]
zone = "office"
path = "{root}/areas/inbox"

[roles.engineer]
grants = [{{ target = "inbox", ops = ["list", "read", "write"] }}]

[users.carol]
principals = ["carol-ops"]
roles = ["engineer"]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str, Path]]:
    root = tmp_path_factory.mktemp("totpcert")
    ca = make_key(root, "user_ca")
    carol = make_key(root, "carol")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", "carol@laptop", "-z", "42",
         "-n", "carol-ops", "-V", "-5m:+1h", f"{carol}.pub"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    (root / "areas" / "inbox").mkdir(parents=True)
    store = SecretStore.open(root / "data")
    secret = store.enrol("carol")
    store.close()
    config = parse(policy(root, ca), source=root / "conduit.toml")
    running = start_gateway(config, {"carol": carol}, root)
    yield running, secret, carol
    stop_gateway(running)


def sftp(gw: RunningGateway, key: Path, code: str, tag: str) -> subprocess.CompletedProcess[str]:
    env = askpass.answering(gw.root / f"askpass-{tag}", code)
    options = askpass.options(gw.known_hosts, key)  # -i KEY also offers KEY-cert.pub
    options += ["-o", "PubkeyAcceptedAlgorithms=ssh-ed25519-cert-v01@openssh.com"]
    return subprocess.run(
        ["sftp", "-P", str(gw.port), *options, "-b", "-", "carol@127.0.0.1"],
        input="ls /inbox\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )


def test_a_certificate_without_the_code_logs_nobody_in(
    site: tuple[RunningGateway, str, Path],
) -> None:
    gw, _secret, carol = site
    done = sftp(gw, carol, "000000", "wrong")
    assert done.returncode != 0
    assert askpass.asked(gw.root / "askpass-wrong"), "the certificate alone must not suffice"
    assert not [e for e in gw.recorder.of("session.start") if e.get("principal") == "carol"]


def test_a_certificate_and_the_code_log_in_with_both_recorded(
    site: tuple[RunningGateway, str, Path],
) -> None:
    gw, secret, carol = site
    # the wrong-code test may have spent this step's neighbour; use the next fresh one
    code = pyotp.TOTP(secret).at(int(time.time()) + STEP)
    done = sftp(gw, carol, code, "right")
    assert done.returncode == 0, done.stderr
    (start,) = [e for e in gw.recorder.of("session.start") if e.get("principal") == "carol"]
    assert start["factors"] == ["publickey", "totp"]
    assert start["cert_key_id"] == "carol@laptop"
    assert str(start["cert_serial"]) == "42"
    assert start["cert_principal"] == "carol-ops"
