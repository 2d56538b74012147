"""``conduit check`` judges trust anchors and the scanner; ``explain`` lists the checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conduit.cli.main import main
from tests.config.site import make_site
from tests.support.clamd import Clamd
from tests.support.signers import PgpKey, pgp_key, ssh_key

A = "a" * 64


@pytest.fixture(scope="module")
def pgp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgpKey]:
    key = pgp_key(tmp_path_factory.mktemp("pgp"), "vendor")
    yield key
    key.stop()


def site(tmp_path: Path, pgp: PgpKey, clamd: str, *, conduit: str = "", extra: str = "") -> Path:
    path = make_site(tmp_path)
    trust = tmp_path / "trust"
    trust.mkdir()
    key = ssh_key(tmp_path, "vendor-ssh")
    (trust / "allowed_signers").write_text(
        f"vendor@example.com {key.with_suffix('.pub').read_text()}"
    )
    (trust / "vendor.asc").write_bytes(pgp.public.read_bytes())
    (trust / "SHA256SUMS").write_text(f"{A}  rtu.bin\n")
    conduit = (
        conduit
        or 'require = ["signature", "scan"]\ntrust = ["vendor"]\ntypes = ["application/gzip"]'
    )
    text = path.read_text().replace('max_size = "512MiB"', f'max_size = "512MiB"\n{conduit}')
    path.write_text(
        text
        + f"""
[inspect.trust.vendor]
ssh_allowed_signers = "trust/allowed_signers"
ssh_namespace = "firmware"
openpgp_keys = ["trust/vendor.asc"]
sha256_lists = ["trust/SHA256SUMS"]

[inspect.scan]
clamd = "{clamd}"
timeout = 2
{extra}"""
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_good_anchors_and_a_live_scanner(
    tmp_path: Path, pgp: PgpKey, clamd: Clamd, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site(tmp_path, pgp, clamd.address)
    code, out = run(capsys, "check", "--config", str(path))
    assert code == 0, out
    assert "warning" not in out and f"{path}: OK" in out
    code, out = run(
        capsys,
        "explain",
        "alice",
        "write",
        "/firmware/rtu.bin",
        "--from",
        "10.10.0.5",
        "--config",
        str(path),
    )
    # (allowed or, until the gateway enforces them, refused: the checks are shown either way)
    assert "check:       scan: malware scan while the upload arrives (clamd at unix:" in out
    assert "check:       type: libmagic type must be one of application/gzip" in out
    assert "check:       signature:" in out and "vendor" in out


def test_an_unreachable_scanner_is_a_warning(
    tmp_path: Path, pgp: PgpKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site(tmp_path, pgp, "unix:run/clamd.sock")
    code, out = run(capsys, "check", "--config", str(path))
    assert code == 0, out
    sock = tmp_path / "run" / "clamd.sock"
    assert f"{path}: warning: inspect.scan.clamd: clamd at unix:{sock} is not reachable" in out


def test_broken_anchors_are_errors_naming_the_key(
    tmp_path: Path, pgp: PgpKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = site(tmp_path, pgp, "unix:run/clamd.sock")
    trust = tmp_path / "trust"
    (trust / "allowed_signers").write_text("vendor@example.com ssh-ed25519 notbase64\n")
    (trust / "vendor.asc").write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n")
    (trust / "SHA256SUMS").write_text(f"{A} rtu.bin\n")
    code, out = run(capsys, "check", "--config", str(path))
    assert code == 1, out
    assert "inspect.trust.vendor.ssh_allowed_signers: " in out and "line 1: not PRINCIPALS" in out
    assert "inspect.trust.vendor.openpgp_keys[0]: " in out and "gpg imported nothing" in out
    assert "inspect.trust.vendor.sha256_lists[0]: " in out and "line 1: not a checksum line" in out
    for name in ("allowed_signers", "vendor.asc", "SHA256SUMS"):
        (trust / name).unlink()
    code, out = run(capsys, "check", "--config", str(path))
    assert code == 1 and out.count("no such file") == 3, out


@pytest.mark.parametrize(
    ("conduit", "extra", "message"),
    [
        (
            'require = ["signature"]\ntrust = ["vendr"]',
            "",
            "conduits[0].trust: unknown trust 'vendr' (inspect.trust: vendor)",
        ),
        ('types = ["gzip"]', "", "conduits[0].types[0]: 'gzip' is not a MIME type"),
        (
            'trust = ["empty"]',
            "[inspect.trust.empty]\n",
            "inspect.trust.empty: no ssh_allowed_signers",
        ),
    ],
)
def test_obligations_that_cannot_be_met_are_errors(
    tmp_path: Path,
    pgp: PgpKey,
    capsys: pytest.CaptureFixture[str],
    conduit: str,
    extra: str,
    message: str,
) -> None:
    path = site(tmp_path, pgp, "unix:run/clamd.sock", conduit=conduit, extra=extra)
    code, out = run(capsys, "check", "--config", str(path))
    assert code == 1 and message in out, out


def test_a_scan_nothing_can_do_is_a_warning(
    tmp_path: Path, pgp: PgpKey, capsys: pytest.CaptureFixture[str]
) -> None:
    # safe: the gateway refuses every file through the conduit
    path = site(tmp_path, pgp, "unix:x", conduit='require = ["scan"]')
    path.write_text(path.read_text().replace('clamd = "unix:x"\n', ""))
    code, out = run(capsys, "check", "--config", str(path))
    assert code == 0, out
    assert 'warning: conduits[0].require: "scan" without [inspect.scan] clamd' in out
