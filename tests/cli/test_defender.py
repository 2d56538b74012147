"""``conduit defender list|unban`` with no gateway running: the state table alone."""

from __future__ import annotations

import json
from ipaddress import ip_address
from pathlib import Path

import pytest

from conduit.auth.defender import Defender, Offence
from conduit.cli.main import main
from conduit.config.auth import Defender as Settings
from conduit.state import StateDB

POLICY = """
[gateway]
data_dir = "data"

[auth.defender]
threshold = 2
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    config = tmp_path / "conduit.toml"
    config.write_text(POLICY)
    defender = Defender(Settings(threshold=2), StateDB.open(tmp_path / "data"))
    for address in ("192.0.2.7", "2001:db8:5::1"):
        for _ in range(2):
            defender.penalise(ip_address(address), Offence.AUTH_FAILED)
    defender.penalise(ip_address("192.0.2.8"), Offence.NO_AUTH)
    defender.save()  # as a clean shutdown leaves it
    return config


def test_list_shows_the_table(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["defender", "list", "--config", str(site)]) == 0
    out = capsys.readouterr().out
    assert "state.sqlite" in out  # where it came from: no gateway answered
    for text in ("192.0.2.7", "2001:db8:5::/64", "auth_failed=2", "192.0.2.8"):
        assert text in out
    assert main(["defender", "list", "--json", "--config", str(site)]) == 0
    rows = {r["source"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["192.0.2.7"]["banned"] and rows["2001:db8:5::/64"]["banned"]
    assert not rows["192.0.2.8"]["banned"] and rows["192.0.2.8"]["score"] == 0.5


def test_unban_without_a_gateway_is_lifted_and_left_to_journal(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["defender", "unban", "2001:db8:5::abcd", "--config", str(site)]) == 0
    out = capsys.readouterr().out
    assert "2001:db8:5::/64: ban until" in out and "no gateway runs" in out
    assert main(["defender", "list", "--json", "--config", str(site)]) == 0
    rows = {r["source"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["2001:db8:5::/64"]["unban_pending"] and not rows["2001:db8:5::/64"]["banned"]
    assert rows["192.0.2.7"]["banned"]  # the other ban is untouched
    # the next gateway to start takes it (and journals it)
    restarted = Defender(Settings(threshold=2), StateDB.open(site.parent / "data"))
    assert [u.source for u in restarted.take_unbans()] == ["2001:db8:5::/64"]


def test_a_policy_without_the_section_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "conduit.toml"
    config.write_text('[gateway]\ndata_dir = "data"\n')
    assert main(["defender", "list", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "no [auth.defender] section" in captured.err
    assert "no sources" in captured.out
    assert main(["defender", "unban", "192.0.2.1", "--config", str(config)]) == 1
    assert "192.0.2.1 is not banned" in capsys.readouterr().err
    assert not (tmp_path / "data" / "state.sqlite").exists()  # a look changes nothing


def test_a_broken_policy_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "conduit.toml"
    config.write_text("[auth.defender]\nthreshold = 0\n")
    assert main(["defender", "list", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "threshold" in err and "Traceback" not in err
