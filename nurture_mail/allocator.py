"""Process memory tuning for the sender.

glibc serves blocks above 128 KB with mmap and hands them back to the kernel on free. zlib
allocates ~256 KB of state for every `compress` call, so compressing one 3 KB message (the
ledger keeps what was sent) cost ~120 µs of fresh-page faults on this class of machine, about
as much as rendering it. Keeping such blocks on the heap makes it ~8 µs. The price is that
up to `TRIM` bytes of freed memory stay with the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP = 4 << 20
TRIM = 32 << 20

_done = False


def keep_freed_blocks() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; False where that is not glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to tune
        return False
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM))
    return _done
