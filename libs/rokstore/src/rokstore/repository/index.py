"""The index: chunk id → (pack, offset, length), kept in immutable, content-addressed index files.

Index file: ``"ROKIDX01" zstd(npacks:u32 pack_id*npacks nentries:u32 entry*nentries)`` with each entry
``chunk:32s pack_no:u32 offset:u32 length:u32 raw_length:u32 flags:u8``. A snapshot writes one index file
for the packs it uploaded, after those packs are stored; gc rewrites them into one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple

import blake3
import zstandard

from rokstore.errors import CorruptData
from rokstore.repository.packs import BlobRef

INDEX_MAGIC = b"ROKIDX01"
_COUNT = struct.Struct("<I")
_ENTRY = struct.Struct("<32sIIIIB")


class Location(NamedTuple):
    pack: bytes
    offset: int
    length: int
    raw_length: int
    flags: int


def index_key(index_id: str) -> str:
    return f"index/{index_id}"


def encode_index(packs: Iterable[tuple[bytes, Iterable[BlobRef]]]) -> tuple[str, bytes]:
    """(index id, bytes) for the given packs and their blobs."""
    pack_ids: list[bytes] = []
    entries = bytearray()
    count = 0
    for number, (pack_id, blobs) in enumerate(packs):
        pack_ids.append(pack_id)
        for b in blobs:
            entries += _ENTRY.pack(b.chunk, number, b.offset, b.length, b.raw_length, b.flags)
            count += 1
    payload = _COUNT.pack(len(pack_ids)) + b"".join(pack_ids) + _COUNT.pack(count) + bytes(entries)
    data = INDEX_MAGIC + zstandard.ZstdCompressor(level=3).compress(payload)
    return blake3.blake3(data).hexdigest(), data


def decode_index(data: bytes, name: str = "") -> list[tuple[bytes, Location]]:
    if not data.startswith(INDEX_MAGIC):
        raise CorruptData(f"index file {name!r} is not a rok index; run 'rok repo check'")
    try:
        payload = zstandard.ZstdDecompressor().decompress(data[len(INDEX_MAGIC) :], max_output_size=1 << 31)
        (npacks,) = _COUNT.unpack_from(payload, 0)
        pos = 4
        packs = [payload[pos + 32 * i : pos + 32 * (i + 1)] for i in range(npacks)]
        pos += 32 * npacks
        (nentries,) = _COUNT.unpack_from(payload, pos)
        pos += 4
        body = payload[pos : pos + nentries * _ENTRY.size]
        if len(body) != nentries * _ENTRY.size:
            raise ValueError("truncated")
        return [
            (chunk, Location(packs[number], offset, length, raw, flags))
            for chunk, number, offset, length, raw, flags in _ENTRY.iter_unpack(body)
        ]
    except (zstandard.ZstdError, struct.error, ValueError, IndexError) as error:
        raise CorruptData(f"index file {name!r} is damaged ({error}); run 'rok repo check'") from None


class Index:
    """All index files of a repository, merged in memory."""

    def __init__(self) -> None:
        self.chunks: dict[bytes, Location] = {}
        self.files: dict[str, list[bytes]] = {}  # index id -> packs it names

    def add_file(self, index_id: str, entries: list[tuple[bytes, Location]]) -> None:
        packs: dict[bytes, None] = {}
        chunks = self.chunks
        for chunk, location in entries:
            chunks.setdefault(chunk, location)
            packs[location.pack] = None
        self.files[index_id] = list(packs)

    def __contains__(self, chunk: object) -> bool:
        return chunk in self.chunks

    def __len__(self) -> int:
        return len(self.chunks)
