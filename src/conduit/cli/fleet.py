"""``conduit fleet run JOB.toml``: one job across the inventory's devices.

``--dry-run`` loads the job and the inventory, resolves the targets and
prints the plan (canaries, waves, each device's destination) without
connecting to anything. A run prints one line per device as it finishes,
then a summary; ``--json`` prints the JSON report instead. The report is also
written to ``REPORT.json`` when the job names a ``report`` (written to a temp
name and renamed: a reader never sees half a report). Exit status: 0 only
when every targeted device is ok; 1 when any failed or was skipped; 2 when
the job or the inventory cannot be used (nothing was started). Ctrl-C stops
starting devices, cancels the running ones and still writes the report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from conduit.cli.main import CommandError
from conduit.client.errors import ClientError, shown
from conduit.client.fleet import DeviceResult, Fleet, plan
from conduit.client.inventory import Device, load
from conduit.client.job import Job, fill, load_job
from conduit.client.report import write
from conduit.names import escape


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="run a job across many devices: push a file, pull logs, back up configs",
        description="Run fleet jobs described in a JOB.toml over the devices of an inventory.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run_parser = actions.add_parser(
        "run",
        help="run JOB.toml (exit 0 only if every device is ok)",
        description="Run the job; print a line per device and a summary, or the JSON report.",
    )
    run_parser.add_argument("job", type=Path, metavar="JOB.toml")
    run_parser.add_argument(
        "--dry-run", action="store_true", help="print the plan, connect to nothing"
    )
    run_parser.add_argument("--json", action="store_true", help="print the JSON report")
    run_parser.set_defaults(handler=run)


def prepare(path: Path) -> tuple[Job, list[Device]]:
    try:
        job = load_job(path)
        devices = load(job.inventory).select(job.targets)
    except ClientError as exc:
        raise CommandError(shown(exc), code=2) from None
    return job, devices


def dry_run(job: Job, devices: list[Device], as_json: bool) -> int:
    steps: list[dict[str, Any]] = [
        {
            "step": step,
            "devices": [
                {
                    "name": d.name,
                    "address": d.endpoint.label(),
                    "protocol": d.protocol,
                    "destination": _where(job, d),
                }
                for d in members
            ],
        }
        for step, members in plan(devices, job.canary, job.wave)
    ]
    if as_json:
        print(json.dumps({"job": job.model_dump(mode="json"), "plan": steps}, indent=2))
        return 0
    direction = "to" if job.kind == "push" else "from"
    print(
        f"{job.kind} {', '.join(job.sources())} {direction} {len(devices)} device(s); "
        "nothing is sent"
    )
    for step in steps:
        for entry in step["devices"]:
            print(
                escape(
                    f"{step['step']:>8}  {entry['name']}  {entry['address']}  "
                    f"{entry['protocol']}  -> {entry['destination']}"
                )
            )
    return 0


def _where(job: Job, device: Device) -> str:
    """Where the device's files go: the far path (push), ``OUT/DEVICE`` (pull), the store."""
    if job.kind == "push":
        return fill(job.destination, device)
    if job.kind == "pull":
        return str(Path(job.destination) / device.name)
    return job.destination


def _line(result: DeviceResult) -> str:
    if result.status in ("ok", "unchanged", "changed"):
        detail = f"{result.sha256}  {result.bytes} bytes  {result.seconds:.1f} s"
        if result.attempts > 1:
            detail += f"  ({result.attempts} attempts)"
    else:
        detail = result.error or ""
    return escape(f"{result.status:<7} {result.name}  {detail}")


def write_report(path: Path, report: dict[str, Any]) -> Path:
    """``PATH.json`` and ``PATH.html`` (see conduit.client.report); returns the JSON's."""
    return write(path, report)[0]


def summary(report: dict[str, Any], written: Path | None) -> None:
    out = Console(highlight=False, soft_wrap=True)
    counts = report["summary"]
    table = Table(title="fleet job", show_header=True)
    columns = ("ok", "unchanged", "changed", "failed", "skipped", "total")
    for column in (*columns, "seconds"):
        table.add_column(column, justify="right")
    table.add_row(*(str(counts[c]) for c in columns), f"{report['job']['seconds']:.1f}")
    out.print(table)
    if report["job"]["interrupted"]:
        out.print("interrupted: devices not started are skipped", markup=False)
    if report.get("run"):
        out.print(f"backup run: {escape(str(report['run']))}", markup=False)
    if report.get("index_error"):
        out.print(f"run index not written: {escape(report['index_error'])}", markup=False)
    if written:
        html = written.with_suffix(".html")
        out.print(f"report: {escape(str(written))}, {escape(str(html))}", markup=False)


async def execute(job: Job, devices: list[Device], as_json: bool) -> dict[str, Any]:
    fleet = Fleet(job, devices, on_result=None if as_json else lambda r: print(_line(r)))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, fleet.stop)
    try:
        runs = {"push": fleet.push, "pull": fleet.pull, "backup": fleet.backup}
        return await runs[job.kind]()
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def run(args: argparse.Namespace) -> int:
    job, devices = prepare(args.job)
    if args.dry_run:
        return dry_run(job, devices, args.json)
    try:
        report = asyncio.run(execute(job, devices, args.json))
    except ClientError as exc:
        raise CommandError(shown(exc), code=2) from None
    written = None
    if job.report is not None:
        try:
            written = write_report(job.report, report)
        except OSError as exc:
            print(f"conduit: {job.report}: report not written: {exc.strerror}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        summary(report, written)
    return 0 if report["summary"]["success"] else 1
