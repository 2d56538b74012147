"""A fleet job's report on disk: ``REPORT.json`` (the machine-readable contract) and
``REPORT.html`` (one self-contained page for people).

The JSON is the report dict as :meth:`~conduit.client.fleet.Fleet.report`
builds it (schema 1; see docs/client.md). The HTML page has no external
asset and no script (its Content-Security-Policy forbids both): inline CSS,
per-device status, hashes, bytes, durations, files, errors, diffs and the
gateway journal links. **Every string** in it -- device names, far paths,
error texts, diffs, all of which a device or a gateway can influence -- goes
through :func:`html.escape`, so a file named ``<script>`` is text on the page.
Both files are written to a temp name and renamed: a reader never sees half
of one.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

STATUS_COLOURS = {
    "ok": "#1b7f3b",
    "unchanged": "#4a6a8a",
    "changed": "#b06a00",
    "failed": "#b3261e",
    "skipped": "#777777",
}

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left;vertical-align:top}th{background:#f2f2f2}code,pre{font:12px/1.3 monospace}
pre{background:#f8f8f8;border:1px solid #ddd;padding:.5em;overflow-x:auto;max-height:40em}
.st{color:#fff;padding:0 .4em;border-radius:3px}.add{color:#1b7f3b}.del{color:#b3261e}
.hunk{color:#6a4a9a}details{margin:.3em 0 1em}summary{cursor:pointer}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _write(target: Path, text: str) -> None:
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, target)


def write(path: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``PATH.json`` and ``PATH.html``; return both paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    as_json = path.with_name(path.name + ".json")
    as_html = path.with_name(path.name + ".html")
    _write(as_json, json.dumps(report, indent=2) + "\n")
    _write(as_html, render(report))
    return as_json, as_html


def _plain(value: object) -> object:
    return json.dumps(value) if isinstance(value, list) else value


def _status(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#777777")
    return f'<span class="st" style="background:{colour}">{_e(status)}</span>'


def _diff(text: str) -> str:
    lines = []
    for line in text.splitlines():
        kind = ""
        if line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+") and not line.startswith("+++"):
            kind = "add"
        elif line.startswith("-") and not line.startswith("---"):
            kind = "del"
        lines.append(f'<span class="{kind}">{_e(line)}</span>' if kind else _e(line))
    return "<pre>" + "\n".join(lines) + "</pre>"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _device(device: dict[str, Any]) -> str:
    parts = [
        f'<h3 id="d-{_e(device["name"])}">{_e(device["name"])} {_status(device["status"])}</h3>'
    ]
    facts = [
        ["step", _e(device.get("step"))],
        ["protocol", _e(device.get("protocol"))],
        ["attempts", _e(device.get("attempts"))],
        ["started", _e(device.get("started"))],
        ["seconds", _e(device.get("seconds"))],
        ["bytes", _e(device.get("bytes"))],
        ["sha256", f"<code>{_e(device.get('sha256'))}</code>"],
        ["verified", _e(device.get("verified"))],
    ]
    if device.get("baseline"):
        facts.append(["baseline", _e(device["baseline"])])
    if device.get("error"):
        facts.append(["error", f"<code>{_e(device['error'])}</code>"])
    parts.append(_table(["", ""], facts))
    files = device.get("files") or []
    if files:
        rows = [
            [
                f"<code>{_e(f.get('remote'))}</code>",
                f"<code>{_e(f.get('local'))}</code>",
                f"<code>{_e(f.get('sha256'))}</code>",
                _e(f.get("bytes")),
                _e(f.get("kept", "stored" if f.get("stored") else "")),
            ]
            for f in files
        ]
        parts.append(_table(["far", "local", "sha256", "bytes", "note"], rows))
    elif device.get("destination"):
        rows = [[f"<code>{_e(d)}</code>"] for d in device["destination"]]
        parts.append(_table(["destination"], rows))
    journal = device.get("journal") or []
    if journal:
        rows = [
            [_e(j.get("type")), f"<code>{_e(j.get('sha256'))}</code>", _e(j.get("path")),
             f"<code>{_e(j.get('search'))}</code>"]
            for j in journal
        ]  # fmt: skip
        parts.append("<p>Gateway journal records of these transfers:</p>")
        parts.append(_table(["type", "sha256", "path", "find it with"], rows))
    for check in device.get("checks") or []:
        parts.append(
            f"<p>{_e(check.get('when'))}_check <code>{_e(check.get('command'))}</code>: "
            f"exit {_e(check.get('exit'))} <code>{_e(check.get('output'))}</code></p>"
        )
    if device.get("diff"):
        parts.append(f"<details open><summary>diff</summary>{_diff(device['diff'])}</details>")
    return "\n".join(parts)


def render(report: dict[str, Any]) -> str:
    """The report as one HTML page (UTF-8, no external asset, every string escaped)."""
    job = report.get("job", {})
    summary = report.get("summary", {})
    devices = report.get("devices", [])
    title = f"conduit fleet {job.get('kind', '')}: {summary.get('total', len(devices))} device(s)"
    counts = _table(
        ["ok", "unchanged", "changed", "failed", "skipped", "total", "seconds"],
        [[_e(summary.get(k, 0)) for k in ("ok", "unchanged", "changed", "failed", "skipped",
                                          "total")] + [_e(job.get("seconds"))]],
    )  # fmt: skip
    facts = [
        [_e(k), f"<code>{_e(_plain(job.get(k)))}</code>"]
        for k in ("kind", "targets", "source", "destination", "user", "host", "started",
                  "finished", "interrupted")
        if k in job
    ]  # fmt: skip
    for key in ("run", "store", "index", "index_error"):
        if report.get(key):
            facts.append([_e(key), f"<code>{_e(report[key])}</code>"])
    overview = _table(
        ["device", "status", "sha256", "bytes", "seconds", "error"],
        [
            [
                f'<a href="#d-{_e(d["name"])}">{_e(d["name"])}</a>',
                _status(d["status"]),
                f"<code>{_e((d.get('sha256') or '')[:16])}</code>",
                _e(d.get("bytes")),
                _e(d.get("seconds")),
                _e(d.get("error")),
            ]
            for d in devices
        ],
    )
    verdict = "every device succeeded" if summary.get("success") else "NOT every device succeeded"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>{_e(title)}</h1><p><b>{_e(verdict)}</b></p>\n{counts}\n{_table(['', ''], facts)}\n"
        f"<h2>Devices</h2>\n{overview}\n"
        + "\n".join(_device(d) for d in devices)
        + "\n</body></html>\n"
    )
