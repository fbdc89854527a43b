"""Keep the process's memory (RSS) close to what it really uses while many threads move large buffers.

glibc raises its mmap threshold each time a large mmapped block is freed, after which 8–16 MiB buffers come
from per-thread heap arenas that are rarely returned to the system: RSS grows far beyond live data. A fixed
threshold (buffers ≥ 1 MiB always mmapped, freed at once) and few arenas keep it bounded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


@functools.cache
def tune_malloc() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 20))
        libc.mallopt(M_ARENA_MAX, 2)
        return ok
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False
