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
        raise CorruptData(f"index file {name!r} is not a rok index; rebuild the index with 'rok repo repair-index'")
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
        raise CorruptData(
            f"index file {name!r} is damaged ({error}); rebuild the index with 'rok repo repair-index'"
        ) from None


class Index:
    """All index files of a repository, merged in memory.

    ``damaged`` and ``missing_packs`` say what a reader left out: index files that could not be decoded (their
    chunks are unknown) and, when the index was checked against a listing of the packs, the packs it names that
    are gone (their chunks are unknown unless another pack holds them too). ``warnings`` says so, one line each.
    """

    def __init__(self) -> None:
        self.chunks: dict[bytes, Location] = {}
        self.files: dict[str, list[bytes]] = {}  # index id -> packs it names
        self.more: dict[bytes, list[Location]] = {}  # further locations of chunks stored in more than one pack
        self.damaged: dict[str, str] = {}  # index id -> why it could not be read
        self.missing_packs: dict[bytes, int] = {}  # pack id -> index entries that point at it

    def copy(self) -> Index:
        """A copy to add files to (the index files themselves are immutable: what was read stays true)."""
        twin = Index()
        twin.chunks = dict(self.chunks)
        twin.files = dict(self.files)
        twin.more = {chunk: list(places) for chunk, places in self.more.items()}
        twin.damaged = dict(self.damaged)
        return twin

    def add_file(self, index_id: str, entries: list[tuple[bytes, Location]]) -> None:
        packs: dict[bytes, None] = {}
        chunks = self.chunks
        for chunk, location in entries:
            first = chunks.setdefault(chunk, location)
            if first is not location and first.pack != location.pack:
                self.more.setdefault(chunk, []).append(location)
            packs[location.pack] = None
        self.files[index_id] = list(packs)

    def packs(self) -> set[bytes]:
        """Every pack some index file names."""
        return {pack for packs in self.files.values() for pack in packs}

    def without_packs(self, missing: set[bytes]) -> Index:
        """The index as far as it holds when the packs ``missing`` are gone: a chunk is kept only where some
        pack that exists holds it, and an index file that names a missing pack no longer counts as whole (so a
        node-local cache saved against it is not trusted wholesale)."""
        live = Index()
        live.files = {name: packs for name, packs in self.files.items() if missing.isdisjoint(packs)}
        live.damaged = dict(self.damaged)
        counts: dict[bytes, int] = dict.fromkeys(missing, 0)
        more = self.more
        for chunk, location in self.chunks.items():
            places = [location, *more.get(chunk, ())]
            kept = [loc for loc in places if loc.pack not in missing]
            for loc in places:
                if loc.pack in missing:
                    counts[loc.pack] += 1
            if kept:
                live.chunks[chunk] = kept[0]
                if len(kept) > 1:
                    live.more[chunk] = kept[1:]
        live.missing_packs = counts
        return live

    @property
    def warnings(self) -> list[str]:
        """One line per object this index left out."""
        lines = [f"skipped index file {name[:16]}: {why}" for name, why in sorted(self.damaged.items())]
        lines += [
            f"pack {pack.hex()[:16]} is missing ({count} index entries point at it): its chunks count as not "
            "stored; run 'rok repo repair-index'"
            for pack, count in sorted(self.missing_packs.items())
        ]
        return lines

    def __contains__(self, chunk: object) -> bool:
        return chunk in self.chunks

    def __len__(self) -> int:
        return len(self.chunks)
