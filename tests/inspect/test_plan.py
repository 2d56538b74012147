"""An Inspector from a policy: which checks each conduit's files go through."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from conduit.config import ConfigError, parse
from conduit.config.model import Obligation
from conduit.inspect.base import State, Verdict
from conduit.inspect.clamd import ClamdStream, Unconfigured, parse_address
from conduit.inspect.filetype import TypeStream
from conduit.inspect.plan import Inspector, evidence_kind, evidence_of
from conduit.inspect.signature import SignatureCheck
from tests.support.clamd import EICAR, Clamd

POLICY = """
[gateway]
data_dir = "data"

[inspect.trust.vendor]
ssh_allowed_signers = "trust/allowed_signers"
ssh_namespace = "firmware"
openpgp_keys = ["trust/vendor.asc"]

[inspect.scan]
clamd = "unix:run/clamd.sock"
timeout = 5

[zones.enterprise]
level = 4
networks = ["10.0.0.0/8"]

[zones.control]
level = 2
networks = ["192.168.0.0/16"]

[areas.fw]
zone = "control"
path = "areas/fw"

[[conduits]]
name = "firmware-down"
from = "enterprise"
to = "control"
require = ["signature", "scan", "approval"]
trust = ["vendor"]
types = ["application/octet-stream", "application/gzip"]

[[conduits]]
name = "plain-up"
from = "control"
to = "enterprise"
"""


def test_a_conduit_with_every_obligation(tmp_path: Path) -> None:
    config = parse(POLICY, source=tmp_path / "conduit.toml")
    inspector = Inspector(config)
    plan = inspector.for_conduit("firmware-down")
    assert plan.inspects
    # "type" is implied by types, so the file goes to quarantine like the others
    assert plan.obligations == {
        Obligation.SIGNATURE, Obligation.SCAN, Obligation.APPROVAL, Obligation.TYPE
    }  # fmt: skip
    first, second = plan.streams(), plan.streams()
    assert [type(s) for s in first] == [ClamdStream, TypeStream]
    assert all(a is not b for a, b in zip(first, second, strict=True))  # fresh per upload
    assert [type(c) for c in plan.whole_file()] == [SignatureCheck]
    assert str(plan.scan) == f"unix:{tmp_path / 'run/clamd.sock'}"  # relative to the file
    text = "\n".join(plan.describe())
    for word in ("scan:", "type:", "signature:", "approval:", "vendor", "application/gzip"):
        assert word in text
    assert "vendor" in inspector.keyrings


def test_a_conduit_without_checks(tmp_path: Path) -> None:
    plan = Inspector(parse(POLICY, source=tmp_path / "c.toml")).for_conduit("plain-up")
    assert not plan.inspects and plan.streams() == [] and plan.whole_file() == []
    with pytest.raises(KeyError):
        Inspector(parse(POLICY, source=tmp_path / "c.toml")).for_conduit("nope")


async def test_scan_required_without_a_scanner_fails_closed(tmp_path: Path) -> None:
    text = POLICY.replace('clamd = "unix:run/clamd.sock"\n', "")
    (stream, _) = (
        Inspector(parse(text, source=tmp_path / "c.toml")).for_conduit("firmware-down").streams()
    )
    assert isinstance(stream, Unconfigured)
    assert (await stream.finish()).state is State.FAILED


@pytest.mark.parametrize("address", ["clamd.sock", "tcp://host", "tcp://h:99999", "unix:"])
def test_bad_scanner_addresses_are_refused_at_load(tmp_path: Path, address: str) -> None:
    with pytest.raises(ConfigError, match="unix:PATH or tcp://HOST:PORT"):
        parse(POLICY.replace("unix:run/clamd.sock", address), source=tmp_path / "c.toml")


@pytest.mark.parametrize(
    ("name", "kind", "of"),
    [
        ("/fw/rtu.bin.sig", "signature", "/fw/rtu.bin"),
        ("/fw/rtu.bin.asc", "signature", "/fw/rtu.bin"),
        ("/fw/SHA256SUMS", "manifest", None),
        ("/fw/SHA256SUMS.sig", "manifest", None),
        ("/fw/SHA256SUMS.asc", "manifest", None),
        ("/fw/rtu.bin.sha256", "manifest", None),
        ("/fw/rtu.bin.sha256.asc", "manifest", None),
        ("/fw/rtu.bin", None, None),
        ("/fw/.sig", None, None),
        ("/fw/.sha256", None, None),
        ("/fw/sha256sums", None, None),  # exact names only: case matters
        ("/fw/rtu.bin.SIG", None, None),
        ("/fw/rtu.sig.bin", None, None),
    ],
)
def test_evidence_names(name: str, kind: str | None, of: str | None) -> None:
    assert evidence_kind(name) == kind
    assert evidence_of(name) == of


async def test_a_plans_streams_against_the_real_scanner(tmp_path: Path, clamd: Clamd) -> None:
    """What the quarantine does per upload: fresh streams, every chunk, then the verdicts."""
    text = POLICY.replace("unix:run/clamd.sock", clamd.address)
    plan = Inspector(parse(text, source=tmp_path / "c.toml")).for_conduit("firmware-down")

    async def upload(data: bytes) -> dict[str, Verdict]:
        streams = plan.streams()
        for at in range(0, len(data), 4096):
            for stream in streams:
                await stream.feed(data[at : at + 4096])
        return {s.check: await s.finish() for s in streams}

    clean = await upload(gzip.compress(b"firmware image " * 5000))
    assert all(v.passed for v in clean.values()), clean
    infected = await upload(gzip.compress(b"x") + EICAR)
    assert infected["scan"].state is State.FAILED and infected["type"].passed
    script = await upload(b"#!/bin/sh\necho pwned\n")
    assert script["scan"].passed and script["type"].reason == "type: text/x-shellscript not allowed"


async def test_an_aborted_upload_releases_its_scanner_connection(clamd: Clamd) -> None:
    stream = ClamdStream(parse_address(clamd.address), 5.0)
    await stream.feed(b"partial")
    assert stream._sock is not None
    await stream.abort()
    assert stream._sock is None
