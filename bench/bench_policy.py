"""Time ``Policy.decide`` on a large policy: 50 zones, 500 devices, 200 users, 300 conduits.

Run: ``PYTHONPATH=src python bench/bench_policy.py [N]``. Prints the median and
p99 in microseconds per decision (target: median under 50 µs). Not a test.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from conduit.config import Config, Op
from conduit.policy import Policy, Request

ZONES, DEVICES, USERS, CONDUITS, AREAS, ROLES = 50, 500, 200, 300, 20, 40


def build(rng: random.Random) -> dict[str, Any]:
    zones = {
        f"z{i:02d}": {"level": i % 5, "networks": [f"10.{i}.0.0/16", f"172.16.{i}.0/24"]}
        for i in range(ZONES)
    }
    names = list(zones)
    areas = {f"area{i}": {"zone": rng.choice(names), "path": f"a{i}"} for i in range(AREAS)}
    devices = {
        f"{kind}-{i:03d}": {
            "zone": rng.choice(names),
            "address": f"192.168.{i // 250}.{i % 250}:22",
            "user": "admin",
        }
        for i, kind in ((i, rng.choice(["plc", "rtu", "hmi", "fw"])) for i in range(DEVICES))
    }
    patterns = ["*.bin", "*.img", "*.log", "*.csv", "cfg/*.xml", "logs/**", "fw-?.*"]
    roles = {
        f"role{i}": {
            "grants": [
                {
                    "target": rng.choice(
                        [*areas, "devices/plc-*", "devices/rtu-*", "devices/hmi-0*", "devices/*"]
                    ),
                    "ops": rng.sample([o.value for o in Op], rng.randint(1, 4)),
                    "paths": rng.sample(patterns, rng.randint(0, 2)),
                }
                for _ in range(rng.randint(3, 8))
            ]
        }
        for i in range(ROLES)
    }
    users = {
        f"user{i}": {"keys": ["ssh-ed25519 AAAA"], "roles": rng.sample(list(roles), 3)}
        for i in range(USERS)
    }
    conduits = []
    for i in range(CONDUITS):
        source, dest = rng.sample(names, 2)
        conduits.append(
            {
                "name": f"c{i}",
                "from": source,
                "to": dest,
                "paths": rng.sample(patterns, rng.randint(0, 3)),
                "max_size": rng.choice([None, "64MiB", "1GiB"]),
                "window": rng.choice(
                    [None, "Sat 02:00-06:00", ["Mon-Fri 22:00-05:00", "Sun 00:00-24:00"]]
                ),
                "require": rng.sample(["signature", "scan", "approval"], rng.randint(0, 2)),
            }
        )
    return {
        "gateway": {"timezone": "Europe/Berlin"},
        "zones": zones,
        "areas": areas,
        "devices": devices,
        "roles": roles,
        "users": users,
        "conduits": conduits,
    }


def requests(rng: random.Random, data: dict[str, Any], count: int) -> list[Request]:
    targets = [f"/{a}" for a in data["areas"]] + [f"/devices/{d}" for d in data["devices"]]
    tails = ["fw.bin", "sub/image.img", "cfg/a.xml", "logs/x/y.log", "notes.txt", "fw-1.bin"]
    out = []
    for _ in range(count):
        zone = rng.randrange(ZONES)
        op = rng.choice(list(Op))
        path = rng.choice(targets)
        if op not in (Op.LIST, Op.MKDIR) or rng.random() < 0.5:
            path += "/" + rng.choice(tails)
        out.append(
            Request(
                f"user{rng.randrange(USERS)}",
                IPv4Address(f"10.{zone}.{rng.randrange(256)}.{rng.randrange(1, 255)}"),
                op,
                path,
                rng.choice([None, 1000, 2**31]),
            )
        )
    return out


def main(count: int = 50_000) -> None:
    rng = random.Random(62443)
    data = build(rng)
    start = time.perf_counter()
    policy = Policy(
        Config.model_validate(data), clock=lambda: datetime(2026, 11, 28, 2, 30, tzinfo=UTC)
    )
    compile_ms = (time.perf_counter() - start) * 1000
    batch = requests(rng, data, count)
    for request in batch[:2000]:  # warm the per-(user, device) grant cache
        policy.decide(request)
    timings = []
    allowed = 0
    outcomes = []
    clock = time.perf_counter_ns
    for request in batch:
        t0 = clock()
        decision = policy.decide(request)
        timings.append(clock() - t0)
        allowed += decision.allowed
        outcomes.append(decision.allowed)
    allowed_timings = sorted(t for t, r in zip(timings, outcomes, strict=True) if r)
    timings.sort()
    median = statistics.median(timings) / 1000
    p99 = timings[int(len(timings) * 0.99)] / 1000
    print(
        f"policy: {ZONES} zones, {DEVICES} devices, {USERS} users, {CONDUITS} conduits"
        f" (compiled in {compile_ms:.0f} ms)"
    )
    print(f"decide: {count} requests, {allowed} allowed")
    print(f"median {median:.1f} µs, p99 {p99:.1f} µs (target: median < 50 µs)")
    if allowed_timings:
        print(f"allowed only: median {statistics.median(allowed_timings) / 1000:.1f} µs")
    t0 = time.perf_counter()
    policy.decide(Request("user0", IPv4Address("10.0.0.1"), Op.LIST, "/devices"))
    print(
        f"list /devices (scans up to {DEVICES} devices): {(time.perf_counter() - t0) * 1e6:.0f} µs"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
