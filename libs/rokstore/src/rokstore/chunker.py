"""Content-defined chunking (FastCDC 2020, ~1 MiB average) of a file read in large blocks.

Files no larger than the minimum chunk size are one chunk. Larger files are read in 8 MiB blocks and cut
with FastCDC; the next block starts where the last, unfinished chunk of a block did (read again from the file,
not copied), so the cut points are those of chunking the whole file at once. Each block is a fresh anonymous
mapping: the kernel zeroes its pages as the read fills them, with the GIL released, where a ``bytearray``
is zero-filled holding it (~70 ms for a 96 MiB file, all of it time the walk and the other readers wait).
Sparse files are read extent by extent (SEEK_DATA/SEEK_HOLE): holes are not read and come back as
``(None, length)``.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Iterator

from pyfastcdc import FastCDC

AVG_SIZE = 1 << 20
MIN_SIZE = 256 << 10
MAX_SIZE = 4 << 20
BLOCK = 8 << 20

_local = threading.local()


def _cdc() -> FastCDC:
    cdc = getattr(_local, "cdc", None)
    if cdc is None:
        cdc = _local.cdc = FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)
    return cdc


def read_exact(fd: int, length: int, offset: int) -> bytearray:
    """Up to ``length`` bytes at ``offset`` (fewer if the file is shorter now)."""
    buf = bytearray(length)
    view = memoryview(buf)
    done = 0
    while done < length:
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            del view
            del buf[done:]
            return buf
        done += n
    return buf


def extents(fd: int, size: int, blocks: int) -> list[tuple[int, int, bool]]:
    """(start, end, has_data) runs covering the file; one data run unless the file looks sparse."""
    if size == 0 or blocks * 512 >= size:
        return [(0, size, True)]
    runs: list[tuple[int, int, bool]] = []
    pos = 0
    try:
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                data = size
            data = min(data, size)
            if data > pos:
                runs.append((pos, data, False))
            if data >= size:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
            runs.append((data, hole, True))
            pos = hole
    except OSError:
        return [(0, size, True)]
    return runs


def iter_chunks(fd: int, size: int, blocks: int) -> Iterator[tuple[memoryview | None, int]]:
    """Yield (data, length) for each chunk of the file, or (None, length) for a hole."""
    for start, end, has_data in extents(fd, size, blocks):
        if not has_data:
            yield None, end - start
            continue
        yield from _cut_range(fd, start, end)


def _cut_range(fd: int, start: int, end: int) -> Iterator[tuple[memoryview | None, int]]:
    cdc = _cdc()
    pos = start
    while pos < end:
        want = min(BLOCK, end - pos)
        view = memoryview(mmap.mmap(-1, want))  # freed once the last chunk viewing it is saved
        got = 0
        while got < want:
            n = os.preadv(fd, [view[got:]], pos + got)
            if n <= 0:
                break
            got += n
        if not got:
            return
        eof = pos + got >= end or got < want
        chunks = list(cdc.cut_buf(view[:got]))
        if not eof and len(chunks) > 1:
            pos += chunks.pop().offset  # the next block starts with the unfinished chunk
        else:
            pos += got
        for chunk in chunks:
            yield chunk.data, chunk.length
        if eof:
            return
