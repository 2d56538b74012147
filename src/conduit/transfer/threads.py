"""The worker threads a transfer's file I/O and hashing run on, off the loop.

A download reads and hashes ahead (readahead.py), an upload writes and hashes
behind (writebehind.py): each has at most one job here at a time, so its
hash sees its bytes in order. The pool is separate from the default
executor, which runs fsyncs: a queue of transfer jobs must not delay a
journal flush.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from conduit.storage.localfiles import landed as settle

__all__ = ["INLINE_BYTES", "THREADS", "executor", "settle"]

#: One per core of the machine these figures were taken on; a job releases
#: the GIL for most of its time (pread/pwrite, SHA-256 of >2 KiB blocks).
THREADS = 2
#: A transfer's bytes up to this are read or written, and hashed, on the loop:
#: for a small file a job's hand-off and the loop's wake-up cost several times
#: the I/O and hash themselves (~250-350 µs of CPU against ~10 µs per 4 KiB file).
INLINE_BYTES = 64 * 1024

_pool: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="conduit-transfer")
    return _pool
