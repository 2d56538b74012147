"""Durations in the policy file: a unit or plain seconds, anything else one clear error."""

from __future__ import annotations

import pytest

from conduit.config import ConfigError
from conduit.config.load import parse
from conduit.config.types import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0), ("250ms", 0.25), (" 5 ", 5.0)],
)
def test_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["15 minutes", "m", "-5s", "1e3", "15m\u202e", True, None, [1]])
def test_anything_else_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_a_bad_duration_names_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse('[auth.defender]\nban_time = "soon"\n')
    assert "auth.defender.ban_time" in str(caught.value)
    assert "'soon' is not a duration" in str(caught.value)


def test_relative_trust_paths_anchor_at_the_policy_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conduit.config.load import load

    policy = tmp_path / "conduit.toml"
    policy.write_text(
        '[auth]\ntrusted_user_ca_keys = ["trust/ca.pub"]\n'
        '[inspect.trust.vendor]\nsha256_lists = ["trust/SHA256SUMS"]\n'
    )
    config = load(policy)
    assert config.auth.trusted_user_ca_keys == [tmp_path / "trust/ca.pub"]
    assert config.inspect.trust["vendor"].sha256_lists == [tmp_path / "trust/SHA256SUMS"]
