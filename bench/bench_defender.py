"""Time the defender's accept-time lookup against the size of its table.

Run: ``PYTHONPATH=src python bench/bench_defender.py``. For tables of 16 and
65,536 tracked sources (a quarter of them banned) it prints the mean time of
``Defender.banned`` per connection, for a banned and a clean source, in
nanoseconds: it should not grow with the table (one dict lookup). Not a test.
"""

from __future__ import annotations

import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from conduit.auth.defender import Defender, Offence
from conduit.config.auth import Defender as Settings

CALLS = 200_000


def table(size: int) -> Defender:
    defender = Defender(Settings(threshold=1, max_sources=max(size, 16)))
    base = int(IPv4Address("10.0.0.0"))
    for n in range(size):
        offence = Offence.AUTH_FAILED if n % 4 == 0 else Offence.NO_AUTH
        defender.penalise(IPv4Address(base + n), offence)  # every 4th is banned
    return defender


def per_call(defender: Defender, address: IPv4Address) -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        defender.banned(address)
    return (time.perf_counter() - started) / CALLS * 1e9


def main() -> None:
    for size in (16, 65_536):
        defender = table(size)
        banned = per_call(defender, IPv4Address("10.0.0.0"))
        clean = per_call(defender, IPv4Address("192.0.2.1"))
        print(f"{size:>6} sources: banned {banned:6.0f} ns, clean {clean:6.0f} ns per lookup")


if __name__ == "__main__":
    main()
