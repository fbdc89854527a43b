"""Memory while a snapshot or restore runs: RSS kept close to what is used, and the cyclic collector paused.

glibc raises its mmap threshold each time a large mmapped block is freed, after which 8–16 MiB buffers come
from per-thread heap arenas that are rarely returned to the system: RSS grows far beyond live data. A fixed
threshold (buffers ≥ 1 MiB always mmapped, freed at once) and few arenas keep it bounded.

A snapshot or restore makes several objects per file (entries, content lists, index locations) that live until it
ends; the cyclic collector, triggered by the count of new objects, walked them again and again — 8 % of an
initial snapshot's CPU (perf), a sixth of its time. Their few cycles (a pack and its packer's callback) hold what
the snapshot keeps until its end anyway, so :func:`collector_paused` turns the collector off meanwhile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

_pauses = 0  # collector_paused blocks running now, in any thread
_resume = False  # the collector was on when the first of them began
_pauses_lock = threading.Lock()


@functools.cache
def tune_malloc() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 20))
        libc.mallopt(M_ARENA_MAX, 2)
        return ok
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off until the last of the blocks running at once (in any thread) ends; left off
    if it was off before the first."""
    global _pauses, _resume
    with _pauses_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pauses_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
