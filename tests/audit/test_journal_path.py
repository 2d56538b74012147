"""Where the journal goes when ``[audit] journal`` is not set: under ``data_dir``."""

from __future__ import annotations

from pathlib import Path

from conduit.audit.journal import journal_files
from conduit.cli.main import main
from conduit.config import parse
from tests.support.gateway import policy_text, start_gateway, stop_gateway


def test_journal_follows_a_relative_data_dir(tmp_path: Path) -> None:
    config = parse('[gateway]\ndata_dir = "data2"\n', source=tmp_path / "conduit.toml")
    assert config.gateway.data_dir == tmp_path / "data2"
    assert config.audit.journal == tmp_path / "data2" / "audit"


def test_journal_follows_an_absolute_data_dir_beside_other_audit_keys(tmp_path: Path) -> None:
    text = f'[gateway]\ndata_dir = "{tmp_path}/elsewhere"\n[audit]\nfsync = "batch"\n'
    config = parse(text, source=tmp_path / "conduit.toml")
    assert config.audit.journal == tmp_path / "elsewhere" / "audit"
    assert config.audit.fsync == "batch"


def test_an_explicit_journal_wins(tmp_path: Path) -> None:
    text = '[gateway]\ndata_dir = "data2"\n[audit]\njournal = "records"\n'
    assert parse(text, source=tmp_path / "c.toml").audit.journal == tmp_path / "records"


def test_no_data_dir_keeps_data_audit(tmp_path: Path) -> None:
    assert parse("", source=tmp_path / "c.toml").audit.journal == tmp_path / "data" / "audit"


def test_a_running_gateway_journals_under_its_data_dir(
    tmp_path: Path, keys: dict[str, Path], capsys
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    text = policy_text(site, keys).replace(f'data_dir = "{site}/data"', 'data_dir = "data2"')
    assert 'data_dir = "data2"' in text
    (site / "conduit.toml").write_text(text)
    config = parse(text, source=site / "conduit.toml")
    running = start_gateway(config, keys, site, recorder="journal")
    stop_gateway(running)
    assert journal_files(site / "data2" / "audit")
    assert not (site / "data").exists()
    capsys.readouterr()
    assert main(["audit", "tail", "--config", str(site / "conduit.toml"), "-n", "5"]) == 0
    assert "gateway.start" in capsys.readouterr().out
