"""How much auditing costs: records/s per fsync policy, sequential and concurrent.

    python bench/bench_audit.py [--records 2000] [--writers 50] [--search 1000000]
    python bench/bench_audit.py --per-file [--files 2000]

Each run opens a fresh journal in a temporary folder (put it on the disk the
gateway uses with --dir) and records file.upload events like the gateway
does. ``--search N`` also builds an N-event journal and times the index
refresh and a few searches.

``--per-file`` is the audit cost on one client's critical path per file, for
the record sequences the gateway writes for one sequential client: "before"
is the act-then-record sequence (``started`` unflushed, the outcome flushed),
"after" the write-ahead one (the intent flushed, the outcome unflushed; for a
download the ``started`` record flushed). It counts the flushes (fdatasync /
fsync) each file waits for and the time per file with ``fsync = "always"``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from conduit.audit import Auditor
from conduit.audit.checkpoint import load_or_create_key
from conduit.audit.index import Index, Query
from conduit.audit.journal import Journal
from conduit.config.model import AuditConfig

FIELDS = dict(
    principal="alice",
    source="10.10.0.5",
    zone="enterprise",
    session="s-1",
    protocol="sftp",
    area="firmware",
    target_zone="dmz",
    bytes=1048576,
    duration=0.42,
    sha256="ab" * 32,
    rule="firmware-down",
)


async def run(base: Path, fsync: str, records: int, writers: int) -> float:
    config = AuditConfig(journal=base / f"audit-{fsync}-{writers}", fsync=fsync)  # type: ignore[arg-type]
    auditor = await Auditor.open(config, node="bench", key_dir=base)
    per = records // writers

    async def writer(w: int) -> None:
        for i in range(per):
            await auditor.record("file.upload", "success", path=f"/fw/{w}/{i}.bin", **FIELDS)

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - t0
    await auditor.close()
    return per * writers / elapsed


def build_big(base: Path, count: int) -> Path:
    directory = base / "big"
    journal = Journal(directory, "bench", load_or_create_key(base), 64 * 1024 * 1024, "never")
    journal.open()
    batch = 10_000
    for start in range(0, count, batch):
        journal.append(
            [
                (
                    "file.upload",
                    "success",
                    dict(
                        FIELDS,
                        principal=f"user{(start + i) % 500}",
                        path=f"/fw/{start + i}.bin",
                        sha256=f"{start + i:064x}",
                    ),
                    None,
                )
                for i in range(min(batch, count - start))
            ]
        )
    journal.close()
    return directory


def bench_search(base: Path, count: int) -> None:
    t0 = time.perf_counter()
    directory = build_big(base, count)
    print(f"built a {count:,}-event journal in {time.perf_counter() - t0:.1f} s")
    index = Index(directory)
    t0 = time.perf_counter()
    index.refresh()
    print(f"index build (first refresh): {time.perf_counter() - t0:.1f} s")
    queries = {
        "--sha256": Query(sha256=f"{count // 2:064x}"),
        "--path exact": Query(path=f"/fw/{count // 3}.bin"),
        "--user (limit 100)": Query(user="user42", limit=100),
        "--since/--until + type": Query(
            since="2000-01-01", until="2999-01-01", type="file.upload", limit=100, newest_first=True
        ),
    }
    for name, q in queries.items():
        t0 = time.perf_counter()
        index.refresh()  # what the CLI does before every search
        found = list(index.search(q))
        print(f"search {name:28} {len(found):4} hit(s) in {time.perf_counter() - t0:.3f} s")
    index.close()


#: (type, outcome, durable, extra fields) per file, as Operations records them
SEQUENCES: dict[str, list[tuple[str, str, bool, dict[str, object]]]] = {
    "upload before": [
        ("file.upload", "started", False, {"transfer": "t"}),
        ("file.upload", "success", True, {"transfer": "t"}),
    ],
    "upload after": [
        ("file.upload", "started", False, {"transfer": "t"}),
        ("file.upload", "intent", True, {"transfer": "t"}),
        ("file.upload", "success", False, {"transfer": "t"}),
    ],
    "download before": [
        ("file.download", "started", False, {"transfer": "t"}),
        ("file.download", "success", True, {"transfer": "t"}),
    ],
    "download after": [
        ("file.download", "started", True, {"transfer": "t"}),
        ("file.download", "success", False, {"transfer": "t"}),
    ],
    "delete before": [("file.delete", "success", True, {})],
    "delete after": [
        ("file.delete", "intent", True, {"intent": "i"}),
        ("file.delete", "success", False, {"intent": "i"}),
    ],
}


async def per_file(base: Path, name: str, files: int) -> tuple[float, float]:
    """(flushes per file, ms per file) for one sequential client."""
    from conduit.audit import faults

    flushes = 0

    class Counting(faults.FileOps):
        def fdatasync(self, fd: int) -> None:
            nonlocal flushes
            flushes += 1
            super().fdatasync(fd)

        def fsync(self, fd: int) -> None:
            nonlocal flushes
            flushes += 1
            super().fsync(fd)

    config = AuditConfig(journal=base / f"per-file-{name.replace(' ', '-')}")
    auditor = await Auditor.open(config, node="bench", key_dir=base)
    real, faults.fs = faults.fs, Counting()
    try:
        t0 = time.perf_counter()
        for i in range(files):
            for type_, outcome, durable, extra in SEQUENCES[name]:
                fields = {k: f"{v}{i}" for k, v in extra.items()}
                await auditor.record(
                    type_,
                    outcome,
                    durable=durable,
                    hold=not durable,
                    path=f"/fw/{i}.bin",
                    **FIELDS,
                    **fields,  # type: ignore[arg-type]
                )
        elapsed = time.perf_counter() - t0
        counted = flushes
    finally:
        faults.fs = real
    await auditor.close()
    return counted / files, elapsed / files * 1000


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--writers", type=int, default=50)
    ap.add_argument("--dir", type=Path, help="where to put journals (default: a temp folder)")
    ap.add_argument("--search", type=int, default=0, help="also bench search on N events")
    ap.add_argument("--per-file", action="store_true", help="flushes and time per file")
    ap.add_argument("--files", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        if args.per_file:
            print(f"{'sequence':16} {'flushes/file':>12} {'ms/file':>8}")
            for name in SEQUENCES:
                flushes, ms = await per_file(base, name, args.files)
                print(f"{name:16} {flushes:>12.2f} {ms:>8.3f}")
            return
        print(f"{'fsync':8} {'sequential':>14} {f'{args.writers} concurrent':>16}")
        for fsync in ("always", "batch", "never"):
            seq = await run(base, fsync, args.records, 1)
            conc = await run(base, fsync, args.records, args.writers)
            print(f"{fsync:8} {seq:>10,.0f} r/s {conc:>12,.0f} r/s")
        if args.search:
            bench_search(base, args.search)


if __name__ == "__main__":
    asyncio.run(main())
