"""TOTP secrets sealed at rest, codes checked once, and who must answer one."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pyotp
import pytest

from conduit.auth.secrets import KEY_FILE, SecretStore, SecretStoreError
from conduit.auth.totp import STEP, Outcome, Verifier, provisioning_uri, required
from conduit.config.auth import SecondFactor
from conduit.state import STATE_FILE

NOW = 1_800_000_000.0  # a fixed instant, mid-step


def code(secret: str, at: float) -> str:
    return pyotp.TOTP(secret).at(at)


# -- hostile cases first ---------------------------------------------------------------


def test_a_code_works_once_and_never_again(tmp_path: Path) -> None:
    verifier = Verifier(SecretStore.open(tmp_path))
    secret = verifier.store.enrol("alice")
    good = code(secret, NOW)
    assert verifier.check("alice", good, NOW) is Outcome.OK
    assert verifier.check("alice", good, NOW) is Outcome.REPLAYED
    # still refused one step later, while the skew window still accepts it
    assert verifier.check("alice", good, NOW + STEP) is Outcome.REPLAYED


def test_an_earlier_code_within_the_window_is_a_replay_too(tmp_path: Path) -> None:
    verifier = Verifier(SecretStore.open(tmp_path))
    secret = verifier.store.enrol("alice")
    assert verifier.check("alice", code(secret, NOW), NOW) is Outcome.OK
    # the previous step's code is in the skew window but older than the one spent
    assert verifier.check("alice", code(secret, NOW - STEP), NOW) is Outcome.REPLAYED
    assert verifier.check("alice", code(secret, NOW + STEP), NOW) is Outcome.OK


def test_the_replay_mark_survives_a_new_process(tmp_path: Path) -> None:
    first = Verifier(SecretStore.open(tmp_path))
    secret = first.store.enrol("alice")
    assert first.check("alice", code(secret, NOW), NOW) is Outcome.OK
    first.store.close()
    again = Verifier(SecretStore.open(tmp_path))
    assert again.check("alice", code(secret, NOW), NOW) is Outcome.REPLAYED


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "000000\n1"])
def test_malformed_and_wrong_codes(tmp_path: Path, bad: str) -> None:
    verifier = Verifier(SecretStore.open(tmp_path))
    secret = verifier.store.enrol("alice")
    if bad == "000000\n1":
        bad = "0" * 6 if code(secret, NOW) != "000000" else "111111"
    assert verifier.check("alice", bad, NOW) is Outcome.WRONG


def test_codes_outside_the_skew_window_are_wrong(tmp_path: Path) -> None:
    verifier = Verifier(SecretStore.open(tmp_path))
    secret = verifier.store.enrol("alice")
    stale = code(secret, NOW - 2 * STEP)
    if stale not in {code(secret, NOW + d * STEP) for d in (-1, 0, 1)}:
        assert verifier.check("alice", stale, NOW) is Outcome.WRONG


def test_one_users_code_does_not_open_another(tmp_path: Path) -> None:
    verifier = Verifier(SecretStore.open(tmp_path))
    alice = verifier.store.enrol("alice")
    bob = verifier.store.enrol("bob")
    if code(alice, NOW) != code(bob, NOW):
        assert verifier.check("bob", code(alice, NOW), NOW) is Outcome.WRONG
    assert verifier.check("carol", code(alice, NOW), NOW) is Outcome.NOT_ENROLLED


def test_secrets_are_sealed_and_the_key_is_private(tmp_path: Path) -> None:
    store = SecretStore.open(tmp_path)
    secret = store.enrol("alice")
    key = tmp_path / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / STATE_FILE).stat().st_mode) == 0o600
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(STATE_FILE))
    assert secret.encode() not in raw
    assert SecretStore.open(tmp_path).secret("alice") == secret


def test_a_row_moved_to_another_user_does_not_open(tmp_path: Path) -> None:
    store = SecretStore.open(tmp_path)
    store.enrol("alice")
    store.close()
    db = sqlite3.connect(tmp_path / STATE_FILE)
    db.execute(
        "INSERT INTO totp_secrets SELECT 'mallory', nonce, sealed, enrolled_at "
        "FROM totp_secrets WHERE user = 'alice'"
    )
    db.commit()
    db.close()
    with pytest.raises(SecretStoreError, match="does not open"):
        SecretStore.open(tmp_path).secret("mallory")


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    SecretStore.open(tmp_path).enrol("alice")
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(SecretStoreError, match="chmod 600"):
        SecretStore.open(tmp_path).secret("alice")


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    SecretStore.open(tmp_path).enrol("alice")
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(SecretStoreError, match="missing"):
        SecretStore.open(tmp_path).secret("alice")


def test_re_enrolling_replaces_the_secret_and_clears_the_mark(tmp_path: Path) -> None:
    verifier = Verifier(SecretStore.open(tmp_path))
    old = verifier.store.enrol("alice")
    assert verifier.check("alice", code(old, NOW), NOW) is Outcome.OK
    new = verifier.store.enrol("alice")
    assert new != old
    if code(old, NOW + STEP) != code(new, NOW + STEP):
        assert verifier.check("alice", code(old, NOW + STEP), NOW + STEP) is Outcome.WRONG
    assert verifier.check("alice", code(new, NOW), NOW) is Outcome.OK


# -- who must answer -----------------------------------------------------------------------


def test_required_by_zone_role_or_user() -> None:
    rules = SecondFactor(totp_zones=["enterprise"], totp_roles=["admin"], totp_users=["carol"])
    assert required(rules, "alice", [], "enterprise")
    assert required(rules, "alice", ["viewer", "admin"], "field")
    assert required(rules, "carol", [], None)
    assert not required(rules, "alice", ["viewer"], "field")
    assert not required(rules, "alice", [], None)
    assert not required(SecondFactor(), "alice", ["admin"], "enterprise")


def test_provisioning_uri_names_issuer_and_account() -> None:
    secret = pyotp.random_base32()
    uri = provisioning_uri(secret, "alice", "gw1")
    assert uri.startswith("otpauth://totp/Conduit:alice%40gw1?")
    assert f"secret={secret}" in uri and "issuer=Conduit" in uri
    parsed = pyotp.parse_uri(uri)
    assert parsed.now() == pyotp.TOTP(secret).now()


def test_a_misspelt_name_in_second_factor_is_an_error() -> None:
    from conduit.config import parse
    from conduit.site.check import check, errors

    text = """
[zones.office]
level = 4
networks = ["10.0.0.0/8"]

[roles.admin]

[users.alice]
keys = ["ssh-ed25519 AAAAC3Nza alice"]
roles = ["admin"]

[auth.second_factor]
totp_zones = ["office", "ofice"]
totp_roles = ["admn"]
totp_users = ["alice", "alcie"]
"""
    found = {(p.key, p.message) for p in errors(check(parse(text), text))}
    assert found == {
        (
            "auth.second_factor.totp_zones[1]",
            "unknown zone 'ofice': TOTP would be asked of nobody by it",
        ),
        (
            "auth.second_factor.totp_roles[0]",
            "unknown role 'admn': TOTP would be asked of nobody by it",
        ),
        (
            "auth.second_factor.totp_users[1]",
            "unknown user 'alcie': TOTP would be asked of nobody by it",
        ),
    }
