"""Packs: chunks compressed (zstd, raw where that does not help) and concatenated into ~16 MiB objects.

Layout of a pack: ``blob blob … header count:u32le "ROKPACK1"``; the header holds one record per blob
(chunk id, stored length, raw length, flags) in blob order, so a pack describes itself and an index can be
rebuilt from packs alone. A pack's name is the BLAKE3 hash of all its bytes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3
import zstandard

from rokstore.errors import CorruptData

PACK_MAGIC = b"ROKPACK1"
PACK_TARGET = 16 * 1024 * 1024
HEADER_ENTRY = struct.Struct("<32sIIB")
TRAILER = struct.Struct("<I8s")
FLAG_RAW = 0
FLAG_ZSTD = 1
ZSTD_LEVEL = 2  # docs/format.md: why
SPOOL_PREFIX = ".tmp.pack."  # a pack spooled to a file while it fills
SPOOL_STALE_AFTER = 3600.0  # seconds: a spooled pack untouched this long was left by a writer that died

_local = threading.local()


def pack_key(pack_id: bytes | str) -> str:
    h = pack_id if isinstance(pack_id, str) else pack_id.hex()
    return f"packs/{h[:2]}/{h}"


def compress(data: bytes | memoryview) -> tuple[bytes | memoryview, int]:
    """zstd-compressed bytes, or the raw bytes when compression saves less than 1/32 of them."""
    compressor = getattr(_local, "c", None)
    if compressor is None:
        compressor = _local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    out = compressor.compress(data)
    n = len(data)
    if len(out) < n - (n >> 5):
        return out, FLAG_ZSTD
    return data, FLAG_RAW


def decompress(blob: bytes | memoryview, flags: int, raw_length: int) -> bytes | memoryview:
    if flags == FLAG_RAW:
        return blob
    if flags != FLAG_ZSTD:
        raise CorruptData(f"a blob uses unknown compression flags {flags}; upgrade rok or run 'rok repo check'")
    decompressor = getattr(_local, "d", None)
    if decompressor is None:
        decompressor = _local.d = zstandard.ZstdDecompressor()
    try:
        return decompressor.decompress(blob, max_output_size=raw_length)
    except zstandard.ZstdError as error:
        raise CorruptData(f"a blob does not decompress ({error}); run 'rok repo check --read-data'") from None


@dataclass(frozen=True)
class BlobRef:
    chunk: bytes
    offset: int
    length: int
    raw_length: int
    flags: int


@dataclass(frozen=True)
class SealedPack:
    pack_id: bytes
    data: bytes  # empty when the pack was spooled to ``path``
    blobs: list[BlobRef]
    size: int = 0
    path: str | None = None  # the spooled pack's file, to be put in place or uploaded, then gone

    def __post_init__(self) -> None:
        if not self.size:
            object.__setattr__(self, "size", len(self.data))


def build_pack(blobs: list[tuple[bytes, bytes | memoryview, int, int]]) -> SealedPack:
    """blobs: (chunk id, stored bytes, raw length, flags)."""
    refs: list[BlobRef] = []
    parts: list[bytes | memoryview] = []
    header = bytearray()
    offset = 0
    for chunk, stored, raw_length, flags in blobs:
        parts.append(stored)
        refs.append(BlobRef(chunk, offset, len(stored), raw_length, flags))
        header += HEADER_ENTRY.pack(chunk, len(stored), raw_length, flags)
        offset += len(stored)
    parts.append(bytes(header))
    parts.append(TRAILER.pack(len(refs), PACK_MAGIC))
    data = b"".join(parts)
    return SealedPack(blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest(), data, refs)


def parse_pack(data: bytes) -> list[BlobRef]:
    """The blobs a pack says it holds (raises CorruptData when the trailer is damaged)."""
    start, length = header_span(data, len(data))
    return parse_header(data[start : start + length], start)


def header_span(tail: bytes | memoryview, size: int) -> tuple[int, int]:
    """(offset, length) of the header of a pack of ``size`` bytes, read from its last bytes ``tail``."""
    if size < TRAILER.size or len(tail) < TRAILER.size:
        raise CorruptData("a pack is too short to hold a header; run 'rok repo check --read-data'")
    count, magic = TRAILER.unpack_from(tail, len(tail) - TRAILER.size)
    start = size - TRAILER.size - count * HEADER_ENTRY.size
    if magic != PACK_MAGIC or start < 0:
        raise CorruptData("a pack has a damaged header; run 'rok repo check --read-data'")
    return start, count * HEADER_ENTRY.size


def parse_header(header: bytes | memoryview, start: int) -> list[BlobRef]:
    """The blobs named by a pack's header, which begins at offset ``start`` (where its blobs end)."""
    refs: list[BlobRef] = []
    offset = 0
    for chunk, length, raw_length, flags in HEADER_ENTRY.iter_unpack(header):
        refs.append(BlobRef(chunk, offset, length, raw_length, flags))
        offset += length
    if offset != start:
        raise CorruptData("a pack's header does not add up to its size; run 'rok repo check --read-data'")
    return refs


def pack_size(blobs: list[BlobRef]) -> int:
    """The size of a pack that holds exactly ``blobs``."""
    return sum(b.length for b in blobs) + len(blobs) * HEADER_ENTRY.size + TRAILER.size


class Packer:
    """Collects compressed chunks from many threads into one pack at a time; hands each full pack to ``emit``.

    A pack is written to a temporary file in ``spool`` as its blobs arrive, and hashed on the way (restic's
    temporary pack files): a pack being filled, or waiting for its upload, costs no memory. For a local
    repository the spool is in the repository itself, and a full pack is renamed into place. ``emit`` may
    block (bounded uploads in flight).
    """

    def __init__(self, emit: Callable[[SealedPack], None], spool: Path, target: int = PACK_TARGET) -> None:
        self._emit = emit
        self._spool = spool
        self._target = target
        self._lock = threading.Lock()
        self._new()

    def _new(self) -> None:
        self._out: _Spooled | None = None  # made by the first blob
        self._size = 0
        self._refs: list[BlobRef] = []
        self._hash = blake3.blake3()

    def add(self, chunk: bytes, stored: bytes | memoryview, raw_length: int, flags: int) -> None:
        full = None
        with self._lock:
            if self._out is None:
                self._out = _Spooled(self._spool)
            self._refs.append(BlobRef(chunk, self._size, len(stored), raw_length, flags))
            self._out.write(stored)
            self._hash.update(stored)
            self._size += len(stored)
            if self._size >= self._target:
                full = self._take()
        if full:
            self._emit(full)

    def flush(self) -> None:
        with self._lock:
            full = self._take() if self._refs else None
        if full:
            self._emit(full)

    def discard(self) -> None:
        """Drop the pack being filled (a snapshot that failed): its file is removed."""
        with self._lock:
            out = self._out
            self._new()
        if out is not None:
            out.remove()

    def _take(self) -> SealedPack:
        """The pack filled so far, sealed (its header and trailer written); a new one begins."""
        out, refs, digest = self._out, self._refs, self._hash
        assert out is not None
        tail = bytearray()
        for ref in refs:
            tail += HEADER_ENTRY.pack(ref.chunk, ref.length, ref.raw_length, ref.flags)
        tail += TRAILER.pack(len(refs), PACK_MAGIC)
        digest.update(tail)
        out.write(tail)
        out.close()
        size = self._size + len(tail)
        self._new()
        return SealedPack(digest.digest(), b"", refs, size, out.path)


class _Spooled:
    """A pack being written to a temporary file (named ``.tmp.…``, which listings skip)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = str(directory / f"{SPOOL_PREFIX}{secrets.token_hex(8)}")
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def remove_stale_spools(directory: Path, older_than: float = SPOOL_STALE_AFTER) -> int:
    """Remove the spooled packs in ``directory`` untouched for ``older_than`` seconds: what a writer killed in the
    middle of a snapshot left (a live one writes to or uploads its packs within seconds). How many went."""
    removed = 0
    cutoff = time.time() - older_than
    try:
        names = [name for name in os.listdir(directory) if name.startswith(SPOOL_PREFIX)]
    except OSError:
        return 0
    for name in names:
        path = directory / name
        with contextlib.suppress(OSError):
            if os.lstat(path).st_mtime < cutoff:
                os.unlink(path)
                removed += 1
    return removed
