"""The report: ``report.json`` + a self-contained ``report.html`` with every device
string escaped, exit codes, and through a gateway the links to its journal records."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conduit.cli.main import main
from conduit.client.report import render
from tests.support.gateway import RunningGateway

from .conftest import Devices
from .test_backup import backup_job, configs
from .test_fleet import inventory

TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "b", "table",
        "tr", "th", "td", "code", "pre", "span", "a", "details", "summary"}  # fmt: skip
HOSTILE = '<script>alert("x")</script>'
HOSTILE_NAME = "<img src=x onerror=alert(1)>"


def tags(page: str) -> set[str]:
    return {t.lower() for t in re.findall(r"<([A-Za-z][A-Za-z0-9]*)", page)}


def test_hostile_names_errors_and_diffs_are_text_in_the_html(
    devices: Devices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory(devices, tmp_path, ["good", "good2"])
    etc = configs(tmp_path, "good", {"a.conf": b"mode safe\n", HOSTILE_NAME: b"1\n"})
    patterns = [f"{HOSTILE_NAME}*", "*.conf"]  # good2 has neither: its error names the first
    path = backup_job(tmp_path, source=[f"{tmp_path}/far/{{device}}/etc/{p}" for p in patterns])
    assert main(["fleet", "run", str(path)]) == 1
    (etc / "a.conf").write_text(f"mode {HOSTILE}\n")
    assert main(["fleet", "run", str(path)]) == 1
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    by_name = {d["name"]: d for d in data["devices"]}
    assert by_name["good"]["status"] == "changed" and HOSTILE in by_name["good"]["diff"]
    assert HOSTILE_NAME in by_name["good2"]["error"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert tags(page) <= TAGS  # no script, img, link, iframe: nothing but the page's own
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "default-src 'none'" in page  # and the browser is told so too
    assert not re.search(r"(href|src)\s*=\s*[\"']?(https?:|//)", page)
    assert by_name["good"]["sha256"] in page
    assert '<span class="add">+mode &lt;script&gt;' in page
    out = capsys.readouterr().out
    assert "changed" in out and "<script>" not in out.replace(HOSTILE, "")


def test_the_report_keeps_its_contract(devices: Devices, tmp_path: Path) -> None:
    inventory(devices, tmp_path, ["good", "scp"])
    for name in ("good", "scp"):
        configs(tmp_path, name, {"a.conf": name.encode()})
    path = backup_job(tmp_path, source=f"{tmp_path}/far/{{device}}/etc/a.conf")
    assert main(["fleet", "run", str(path)]) == 0
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["schema"] == 1 and data["job"]["kind"] == "backup"
    for device in data["devices"]:
        assert {"name", "status", "sha256", "bytes", "error", "diff"} <= set(device)
        assert device["sha256"] == hashlib.sha256(device["name"].encode()).hexdigest()
    assert data["summary"]["success"] is True
    page = render(data)
    assert page.startswith("<!DOCTYPE html>") and "every device succeeded" in page


def test_a_pull_through_the_gateway_links_each_file_to_its_journal_record(
    gw: RunningGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = b"all well\n" * 200_000  # 1.8 MB: many read requests in flight
    (gw.area("inbox") / "status.log").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    (tmp_path / "inventory.toml").write_text(
        f'[defaults]\nknown_hosts = "{gw.known_hosts}"\n'
        f'[devices.gw1]\naddress = "127.0.0.1:{gw.port}"\nuser = "alice"\n'
        f'identity = "{gw.keys["alice"]}"\ngroups = ["gw"]\n'
    )
    (tmp_path / "job.toml").write_text(
        'inventory = "inventory.toml"\nkind = "pull"\ntargets = ["gw"]\n'
        'source = "/inbox/*.log"\ndestination = "got"\nverify = false\nreport = "report"\n'
    )
    assert main(["fleet", "run", str(tmp_path / "job.toml")]) == 0, capsys.readouterr()
    [device] = json.loads((tmp_path / "report.json").read_text())["devices"]
    assert device["gateway"] is True and device["sha256"] == digest
    [link] = device["journal"]
    assert link["type"] == "file.download" and link["sha256"] == digest
    assert link["user"] == "alice" and link["path"] == "/inbox/status.log"
    assert f"--user alice --sha256 {digest}" in link["search"]
    since, until = (datetime.fromisoformat(link[k]) for k in ("since", "until"))
    assert since <= datetime.now(UTC) < until
    # Before the gateway hashed downloads read with read-ahead past the end, this
    # record said "partial read" with no SHA-256: the report could link nothing.
    records = [e for e in gw.recorder.of("file.download", "success") if e["sha256"] == digest]
    assert len(records) == 1 and records[0]["principal"] == "alice"
    assert records[0]["path"] == link["path"]
    assert digest in (tmp_path / "report.html").read_text()
