"""Uploads written behind in a worker thread, driven by real OpenSSH clients.

Many uploads at once against a small shared bound: the bound holds, every
file lands byte-exact under its final name with the hash of its bytes. (A
client killed mid-upload is test_atomic's: nothing partial is left.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conduit.transfer import writebehind
from conduit.transfer.budget import ReorderBudget
from tests.support.gateway import RunningGateway, random_file, run_sampling, sha256


def test_many_uploads_stay_within_the_shared_bound(
    gw: RunningGateway, legacy: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 1024 * 1024
    budget = ReorderBudget(bound)
    monkeypatch.setattr(writebehind, "_shared", budget)
    sources = [random_file(tmp_path / f"u{i}.bin", 6 * 1024 * 1024 + i) for i in range(6)]
    argv = ["scp", "-q", *(["-O"] if legacy else []), "-P", str(gw.port), *gw.ssh_options()]
    peaks = run_sampling(
        [[*argv, str(src), f"alice@127.0.0.1:/inbox/{src.name}"] for src in sources],
        lambda: budget.held,
    )
    assert peaks and 0 < max(peaks) <= bound  # used, and never beyond the bound
    for src in sources:
        assert sha256(gw.area("inbox") / src.name) == sha256(src)
    got = {e["path"]: e["sha256"] for e in gw.recorder.of("file.upload", "success")}
    assert got == {f"/inbox/{src.name}": sha256(src) for src in sources}
    assert budget.held == 0
