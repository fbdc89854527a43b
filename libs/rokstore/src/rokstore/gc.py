"""``gc``: remove what no snapshot references, repacking packs that are mostly garbage.

gc holds the exclusive lock (see ``locks``) for its whole run, so no snapshot is in flight while it decides
what is garbage. Crash-safe order: write new packs, write the new index (one file naming every live chunk),
delete the old index files, and only then delete packs — an index never names a deleted pack. Trees are blobs
like chunks: live while a snapshot reaches them.

With a :class:`SnapshotCatalog` (what records the snapshots: rok's registry, for ``rok repo gc --registry``)
gc first removes snapshot records: those the catalog says were forgotten, and those it never recorded (orphans:
a snapshotter stopped between the store's commit and its record) once they are older than ``orphan_grace`` —
a younger one may still be on its way to being recorded. The catalog is asked while the lock is held, so every
snapshot record that will ever exist for a snapshot begun before is already there; a catalog that records none
of the store's snapshots is not taken at its word (it would make every snapshot an orphan).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import trace

from rokstore.errors import CorruptData, StorePermanentError
from rokstore.models import GcReport
from rokstore.repository import Repository
from rokstore.repository.index import Location, encode_index, index_key
from rokstore.repository.locks import remove_stale_locks
from rokstore.repository.manifest import snapshot_key
from rokstore.repository.packs import BlobRef, build_pack, pack_key
from rokstore.repository.references import load_references

tracer = trace.get_tracer("rokstore")

REPACK_BELOW = 0.5  # repack a pack when less than this share of its bytes is still referenced
ORPHAN_GRACE = 24 * 3600.0  # seconds a snapshot nobody recorded is kept: it may still be on its way


class SnapshotCatalog(Protocol):
    """What records the snapshots of a store (rok's registry): which it still records, which it forgot."""

    async def known(self, ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """Of ``ids``: those still recorded, and those forgotten (recorded once, by nothing any more)."""
        ...


class UnknownCatalog(StorePermanentError):
    """The catalog records none of the store's snapshots: it is likely another store's (or an empty one)."""


@dataclass
class _Records:
    """The snapshot records gc removes before it looks for garbage."""

    forgotten: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    young_orphans: int = 0

    @property
    def ids(self) -> set[str]:
        return {*self.forgotten, *self.orphans}


async def collect_garbage(
    repo: Repository,
    *,
    dry_run: bool = False,
    catalog: SnapshotCatalog | None = None,
    orphan_grace: float = ORPHAN_GRACE,
) -> GcReport:
    """Remove what no snapshot references, under the exclusive lock; ``dry_run`` only reports what it would do.

    With ``catalog``, first the snapshots it forgot, and those it never recorded that are older than
    ``orphan_grace`` seconds.
    """
    started = time.monotonic()
    with tracer.start_as_current_span("rok.store.gc") as span:
        await remove_stale_locks(repo.backend)
        lock = await repo.lock("exclusive")
        try:
            records = _Records() if catalog is None else await _records(repo, catalog, orphan_grace)
            if not dry_run:
                await _remove_records(repo, records.ids)
            report = await _gc(repo, dry_run, started, records)
            span.set_attribute("rok.bytes", report.bytes_freed)
            return report
        finally:
            await lock.release()


async def _records(repo: Repository, catalog: SnapshotCatalog, grace: float) -> _Records:
    stored = {i.key.removeprefix("snapshots/"): i.mtime for i in await repo.backend.list("snapshots/")}
    recorded, forgotten = await catalog.known(sorted(stored))
    now = time.time()
    records = _Records()
    for sid, written in sorted(stored.items()):
        if sid in recorded:
            continue
        if sid in forgotten:
            records.forgotten.append(sid)
        elif now - written >= grace:
            records.orphans.append(sid)
        else:
            records.young_orphans += 1
    if records.orphans and not recorded and not forgotten:
        raise UnknownCatalog(
            f"gc stopped: the registry records none of the {len(stored)} snapshots in {repo.url}, so each would be "
            "removed as an orphan; is it this store's registry? Run gc without --registry to keep every snapshot"
        )
    return records


async def _remove_records(repo: Repository, ids: set[str]) -> None:
    sem = asyncio.Semaphore(16)

    async def remove(sid: str) -> None:
        async with sem:
            await repo.backend.delete(snapshot_key(sid))

    await asyncio.gather(*(remove(sid) for sid in sorted(ids)))


async def _gc(repo: Repository, dry_run: bool, started: float, records: _Records) -> GcReport:
    index = await repo.load_index()
    if index.damaged:
        # Its chunks are unknown: the packs holding them would look like garbage.
        raise CorruptData(
            f"gc stopped: {index.warnings[0]}; rebuild the index with 'rok repo repair-index' before collecting"
        )
    ids, users, problems = await load_references(repo, skip=records.ids)
    if problems:
        raise CorruptData(
            f"gc stopped: {problems[0].message}; a snapshot's trees cannot be read, so what is garbage is "
            "unknown — run 'rok repo check'"
        )
    live = set(users)
    pack_sizes = {bytes.fromhex(i.key.rsplit("/", 1)[-1]): i.size for i in await repo.backend.list("packs/")}
    keep: dict[bytes, Location] = {}
    for chunk in live:
        loc = index.chunks.get(chunk)
        if loc is not None and loc.pack in pack_sizes:
            keep[chunk] = loc
    live_bytes: dict[bytes, int] = defaultdict(int)
    for loc in keep.values():
        live_bytes[loc.pack] += loc.length
    blob_bytes: dict[bytes, int] = defaultdict(int)
    for loc in index.chunks.values():
        blob_bytes[loc.pack] += loc.length
    delete: list[bytes] = []
    repack: list[bytes] = []
    for pack, size in pack_sizes.items():
        used = live_bytes.get(pack, 0)
        if used == 0:
            delete.append(pack)
        elif used < blob_bytes.get(pack, size) * REPACK_BELOW:
            repack.append(pack)
    dead_chunks = len(index.chunks) - len(keep)
    freed = sum(pack_sizes[p] for p in delete) + sum(pack_sizes[p] - live_bytes[p] for p in repack)
    written: list[tuple[bytes, list[BlobRef]]] = []
    rewrite_index = bool(delete or repack or dead_chunks or len(index.files) > 1)
    if not dry_run:
        if repack:
            moved = defaultdict(list)
            for chunk, loc in keep.items():
                if loc.pack in repack:
                    moved[loc.pack].append((chunk, loc))
            batch: list[tuple[bytes, bytes, int, int]] = []
            size = 0

            async def flush() -> None:
                nonlocal batch, size
                if not batch:
                    return
                sealed = await asyncio.to_thread(build_pack, batch)
                with tracer.start_as_current_span("rok.store.pack.upload") as span:
                    span.set_attribute("rok.bytes", len(sealed.data))
                    await repo.backend.put(pack_key(sealed.pack_id), sealed.data)
                written.append((sealed.pack_id, sealed.blobs))
                batch, size = [], 0

            for pack, blobs in moved.items():
                data = await repo.backend.get(pack_key(pack))
                for chunk, loc in blobs:
                    blob = data[loc.offset : loc.offset + loc.length]
                    batch.append((chunk, blob, loc.raw_length, loc.flags))
                    size += len(blob)
                if size >= 16 << 20:
                    await flush()
            await flush()
        if rewrite_index:
            moved_chunks = {b.chunk for _, blobs in written for b in blobs}
            by_pack: dict[bytes, list[BlobRef]] = defaultdict(list)
            for chunk, loc in keep.items():
                if chunk not in moved_chunks:
                    by_pack[loc.pack].append(BlobRef(chunk, loc.offset, loc.length, loc.raw_length, loc.flags))
            index_id, data = encode_index([*by_pack.items(), *written])
            with tracer.start_as_current_span("rok.store.index.write") as span:
                span.set_attribute("rok.bytes", len(data))
                await repo.backend.put(index_key(index_id), data)
            for old in index.files:
                if old != index_id:
                    await repo.backend.delete(index_key(old))
        sem = asyncio.Semaphore(16)

        async def remove(key: str) -> None:
            async with sem:
                await repo.backend.delete(key)

        # A repacked pack can come out byte-identical to an old one (same blobs): never delete what was written.
        new_packs = {pack for pack, _ in written}
        await asyncio.gather(*(remove(pack_key(p)) for p in [*delete, *repack] if p not in new_packs))
    return GcReport(
        dry_run=dry_run,
        snapshots=len(ids),
        packs_deleted=len(delete),
        packs_repacked=len(repack),
        packs_written=len(written),
        bytes_freed=freed,
        chunks_kept=len(keep),
        chunks_deleted=dead_chunks,
        index_files_rewritten=len(index.files) if rewrite_index else 0,
        seconds=round(time.monotonic() - started, 3),
        snapshots_forgotten=len(records.forgotten),
        orphans_removed=len(records.orphans),
        orphans_kept=records.young_orphans,
    )
