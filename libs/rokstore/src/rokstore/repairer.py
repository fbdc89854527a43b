"""``repair_index``: rebuild the index from the packs themselves (as ``restic repair index`` does).

Each pack describes itself (see ``packs``): its last bytes say how long its header is, the header names every
blob. A pack the old index already describes exactly (its size is that of the blobs the index names plus their
header) is not read; every other pack costs one or two ranged GETs of its end. Under the exclusive lock: write
the new index (one file naming every blob of every pack that exists), then delete the old index files —
dangling entries (packs that are gone) and damaged files go with them.
"""

from __future__ import annotations

import asyncio

from opentelemetry import trace

from rokstore.errors import CorruptData, ObjectNotFound
from rokstore.models import RepairReport
from rokstore.repository import Repository
from rokstore.repository.backends import Backend
from rokstore.repository.index import Location, decode_index, encode_index, index_key
from rokstore.repository.packs import BlobRef, header_span, pack_key, pack_size, parse_header

tracer = trace.get_tracer("rokstore")

TAIL = 64 * 1024  # one GET of a pack's last bytes holds the header of up to ~1,500 blobs


async def repair_index(repo: Repository, *, read_all_packs: bool = False) -> RepairReport:
    """Rebuild the index from the packs, under the exclusive lock; ``read_all_packs`` reads every header."""
    with tracer.start_as_current_span("rok.store.repair_index"):
        lock = await repo.lock("exclusive")
        try:
            return await _repair(repo, read_all_packs)
        finally:
            await lock.release()


async def _repair(repo: Repository, read_all_packs: bool) -> RepairReport:
    old_files = [info.key.removeprefix("index/") for info in await repo.backend.list("index/")]
    known: dict[bytes, dict[bytes, Location]] = {}  # pack -> chunk -> location, as the old index says
    for name in old_files:
        try:
            entries = decode_index(await repo.backend.get(index_key(name)), name)
        except (CorruptData, ObjectNotFound):
            continue  # rebuilt from the packs it named, like every pack the index misses
        for chunk, loc in entries:
            known.setdefault(loc.pack, {})[chunk] = loc
    sizes = await repo.pack_sizes()
    dropped = sum(len(chunks) for pack, chunks in known.items() if pack not in sizes)
    packs: dict[bytes, list[BlobRef]] = {}
    indexed: dict[bytes, list[BlobRef]] = {}
    to_read: list[bytes] = []
    for pack, size in sizes.items():
        blobs = indexed[pack] = sorted(
            (BlobRef(c, loc.offset, loc.length, loc.raw_length, loc.flags) for c, loc in known.get(pack, {}).items()),
            key=lambda b: b.offset,
        )
        if not read_all_packs and blobs and pack_size(blobs) == size and _contiguous(blobs):
            packs[pack] = blobs
        else:
            to_read.append(pack)
    warnings: list[str] = []
    sem = asyncio.Semaphore(8)

    async def read(pack: bytes) -> None:
        async with sem:
            try:
                packs[pack] = await read_header(repo.backend, pack, sizes[pack])
            except ObjectNotFound:
                warnings.append(f"pack {pack.hex()[:16]} vanished while the index was rebuilt")
            except CorruptData as error:
                if indexed[pack]:  # the old index still describes it: keep what it says
                    packs[pack] = indexed[pack]
                    warnings.append(f"pack {pack.hex()[:16]}: {error}; kept its {len(indexed[pack])} index entries")
                else:
                    warnings.append(f"skipped pack {pack.hex()[:16]}: {error}; its chunks are not indexed")

    await asyncio.gather(*(read(p) for p in to_read))
    index_id = ""
    if packs:
        index_id, data = encode_index(sorted(packs.items()))
        await repo.backend.put(index_key(index_id), data)
    removed = 0
    for name in old_files:
        if name != index_id:
            await repo.backend.delete(index_key(name))
            removed += 1
    return RepairReport(
        packs=len(sizes),
        packs_read=len(to_read),
        chunks=len({b.chunk for blobs in packs.values() for b in blobs}),
        entries_dropped=dropped,
        index_files_removed=removed,
        index_written=index_id,
        warnings=sorted(warnings),
    )


def _contiguous(blobs: list[BlobRef]) -> bool:
    offset = 0
    for blob in blobs:
        if blob.offset != offset:
            return False
        offset += blob.length
    return True


async def read_header(backend: Backend, pack: bytes, size: int) -> list[BlobRef]:
    """The blobs a stored pack holds, from one ranged GET of its end (two for a very large header)."""
    key = pack_key(pack)
    tail_start = max(0, size - TAIL)
    tail = await backend.get_range(key, tail_start, size - tail_start)
    if len(tail) != size - tail_start:
        raise CorruptData(f"pack {pack.hex()[:16]} is shorter than its listing says")
    start, length = header_span(tail, size)
    if start >= tail_start:
        header = tail[start - tail_start : start - tail_start + length]
    else:
        header = await backend.get_range(key, start, length)
    return parse_header(header, start)
