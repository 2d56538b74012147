"""conduit.gateway.process: glibc's malloc thresholds fixed for the process's life."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.gateway import conduit_env

# A loop shaped like a transfer: a few 300 KB buffers alive at once, then freed.
# Untuned glibc hands the freed top of the heap back to the kernel every round
# and faults it in again on the next; tuned, the pages stay.
_CHURN = """
import resource, sys
from conduit.gateway import process
if sys.argv[1] == "tuned":
    assert process.tune_malloc()
kept = b"k" * 300_000
del kept  # what the first freed packet does: glibc raises its mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    buffers = [b"x" * 300_000 for _ in range(4)]
    del buffers
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _churn_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _CHURN, mode],
        capture_output=True,
        text=True,
        check=True,
        env=conduit_env(),  # this tree's conduit, not whichever is installed
    )
    return int(done.stdout)


@pytest.mark.skipif(
    "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""), reason="glibc's mallopt only"
)
def test_malloc_tuning_keeps_buffer_pages() -> None:
    untuned, tuned = _churn_faults("untuned"), _churn_faults("tuned")
    # 200 rounds x 4 buffers x 73 pages is ~58,000 faults when the heap is trimmed.
    assert untuned > 20_000, untuned
    assert tuned < 2_000, tuned
