"""256 MiB through the inspection streams vs without: does the scan keep up?

Run: ``python bench/bench_inspect.py [MiB]`` (default 256; starts its own clamd
with the tests' tiny signature database, so this measures clamd's stream
handling and the hand-over, not a full ClamAV database). Each pass hashes
the file chunk by chunk and writes it to a temp file, as an upload does; the
checked passes also feed the chunks to the streams. Prints MiB/s per pass,
the ratio to the unchecked pass (target: >= 0.7 with the scan on) and how
long the verdict took after the last byte (what a client waits for beyond
its upload). Not a test.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.support.clamd import start_clamd, stop_clamd  # noqa: E402

from conduit.inspect.base import Stream  # noqa: E402
from conduit.inspect.clamd import ClamdStream, parse_address  # noqa: E402
from conduit.inspect.filetype import TypeStream  # noqa: E402

CHUNK = 256 * 1024


async def upload(size: int, streams: list[Stream], block: bytes, out: Path) -> tuple[float, float]:
    """Seconds for the whole pass and for the verdicts after the last byte."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    with out.open("wb") as handle:
        for _ in range(size // len(block)):
            digest.update(block)
            handle.write(block)
            for stream in streams:
                await stream.feed(block)
    last_byte = time.perf_counter()
    verdicts = [await stream.finish() for stream in streams]
    done = time.perf_counter()
    bad = [v for v in verdicts if not v.passed]
    if bad:
        raise SystemExit(f"a check failed: {bad}")
    return done - started, done - last_byte


async def main(mib: int) -> None:
    size = mib * 1024 * 1024
    block = os.urandom(CHUNK)
    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as tmp:
        folder = Path(tmp)
        clamd = start_clamd(folder / "clamd", stream_max=size + CHUNK)
        print(f"clamd up in {clamd.started_in:.2f} s; {mib} MiB in {CHUNK // 1024} KiB chunks")
        try:
            address = parse_address(clamd.address)
            # clamd's first stream after start is slow (engine warm-up): not timed
            await upload(8 * CHUNK, [ClamdStream(address, 60.0)], block, folder / "upload")
            passes = {
                "unchecked": lambda: [],
                "scan": lambda: [ClamdStream(address, 60.0)],
                "scan+type": lambda: [
                    ClamdStream(address, 60.0),
                    TypeStream(["application/octet-stream"]),
                ],
            }
            base = 0.0
            for name, make in passes.items():
                # fresh bytes per pass: clamd remembers the hashes of clean files
                block = os.urandom(CHUNK)
                spent, tail = await upload(size, make(), block, folder / "upload")
                rate = mib / spent
                base = base or rate
                print(
                    f"{name:>10}: {rate:8.1f} MiB/s  ratio {rate / base:4.2f}"
                    f"  verdict {tail * 1000:7.1f} ms after the last byte"
                )
        finally:
            stop_clamd(clamd)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 256))
