"""A large file is read block by block, yet cut exactly where FastCDC cuts the whole file at once: the cut points,
and so the chunk ids and what de-duplicates, do not depend on where the blocks end."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from pyfastcdc import FastCDC
from rokstore import chunker


@pytest.mark.parametrize(
    "size", [chunker.BLOCK - 1, chunker.BLOCK, 3 * chunker.BLOCK + 12_345, chunker.MIN_SIZE + 1], ids=str
)
def test_a_file_read_in_blocks_is_cut_where_the_whole_file_is(tmp_path: Path, size: int) -> None:
    rng = random.Random(size)
    # incompressible bytes, with a run of zeros across the first block's end (cut only at the maximum size there)
    data = bytearray(rng.randbytes(size))
    if size > chunker.BLOCK:
        start, stop = chunker.BLOCK - (6 << 20), min(size, chunker.BLOCK + (1 << 20))
        data[start:stop] = bytes(stop - start)
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    whole = FastCDC(chunker.AVG_SIZE, min_size=chunker.MIN_SIZE, max_size=chunker.MAX_SIZE)
    expected = [bytes(c.data) for c in whole.cut_buf(memoryview(data))]

    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        cut = [bytes(view) for view, _ in chunker.iter_chunks(fd, st.st_size, st.st_blocks) if view is not None]
    finally:
        os.close(fd)
    assert [len(c) for c in cut] == [len(c) for c in expected]
    assert cut == expected
