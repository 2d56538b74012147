"""Settings for the whole gateway process, made once when ``conduit serve`` starts.

glibc malloc: big buffers stay in the heap, the heap is not trimmed each time.
Packets, file chunks and their ciphertexts are bytes objects of 32 KiB to a few
hundred KiB. glibc serves those over its mmap threshold (128 KiB at start, then
raised as mmapped chunks are freed) with a fresh mmap, and gives the top of the
heap back to the kernel whenever more than twice that threshold is free there.
Which of the two a process falls into depends on where its long-lived objects
happened to land, and then holds for the process's life: measured on 1 GiB SFTP
downloads, some processes took 370,000 page faults and 45 % more CPU than others
(17,000). Fixed thresholds take the coin toss away: every such transfer then
costs ~1,400 faults. The price is up to TRIM_THRESHOLD of freed heap kept mapped.

This is the process's business, not asyncssh's nor one gateway object's, so it
is made by the serve entry point rather than by :meth:`Gateway.start`.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20


def tune_malloc() -> bool:
    """Fix glibc's malloc thresholds; False where the C library is not glibc."""
    libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else None
    if not libc or not libc.startswith("glibc"):
        return False  # musl's mallopt does nothing; macOS has none
    mallopt = ctypes.CDLL(None).mallopt
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
