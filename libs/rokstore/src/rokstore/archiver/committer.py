"""Making a snapshot visible, in the crash-safe order: packs (already stored), then the index file naming
them, then the manifest (the tree), then the snapshot record. A crash before the record leaves only garbage.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
from pathlib import Path

from opentelemetry import trace

from rokstore.archiver.tally import Tally
from rokstore.errors import RepositoryLocked
from rokstore.repository import Repository
from rokstore.repository.index import Location, encode_index, index_key
from rokstore.repository.locks import Lock
from rokstore.repository.manifest import Entry, encode_manifest, encode_record, manifest_key, snapshot_key
from rokstore.repository.packs import SealedPack

tracer = trace.get_tracer("rokstore")


class TreeSaver:
    """Stores the tree a snapshot holds: today one manifest of every entry, in path order."""

    def __init__(self, repo: Repository, tally: Tally) -> None:
        self.repo = repo
        self.tally = tally

    async def save(self, entries: list[Entry], cached: tuple[str, bytes] | None) -> tuple[str, bytes]:
        """(manifest id, bytes) of ``entries``, stored; ``cached`` is the same manifest, already encoded."""
        if cached is not None:
            manifest_id, data = cached  # the same entries: the same manifest (checked on load)
        else:
            manifest_id, data = await asyncio.to_thread(encode_manifest, entries)
        with tracer.start_as_current_span("rok.store.manifest.write") as span:
            span.set_attribute("rok.manifest.id", manifest_id)
            span.set_attribute("rok.bytes", len(data))
            await self.repo.backend.put(manifest_key(manifest_id), data)
        self.tally.bytes_uploaded += len(data)
        return manifest_id, data


class Committer:
    def __init__(self, repo: Repository, tally: Tally) -> None:
        self.repo = repo
        self.tally = tally

    async def write_index(self, lock: Lock, packs: list[SealedPack]) -> list[str]:
        """The index file naming ``packs`` (none when no pack was written), once the lock is known still held."""
        if not packs:
            return []
        index_id, data = encode_index((p.pack_id, p.blobs) for p in packs)
        with tracer.start_as_current_span("rok.store.index.write") as span:
            span.set_attribute("rok.bytes", len(data))
            if not await lock.still_held():
                raise RepositoryLocked(
                    f"this snapshot's lock on {self.repo.url} was taken away (paused past its lease?); "
                    "take the snapshot again"
                )
            await self.repo.backend.put(index_key(index_id), data)
        self.tally.bytes_uploaded += len(data)
        self.repo.remember_index(index_id, data, _locations(packs))
        return [index_id]

    async def write_record(self, manifest_id: str, index_ids: list[str], source: Path, tags: dict[str, str]) -> str:
        """The snapshot record, last: from here on the snapshot exists. Its id."""
        tally = self.tally
        record = {
            "version": 1,
            "manifest": manifest_id,
            "time": datetime.datetime.now(datetime.UTC).isoformat(),
            "hostname": socket.gethostname(),
            "path": str(source),
            "tags": tags,
            "files": tally.files,
            "dirs": tally.dirs,
            "bytes": tally.bytes_scanned,
            "bytes_new": tally.bytes_new,
            "incomplete": bool(tally.errors),
            "errors": sorted(tally.errors)[:1000],
            "index": index_ids,
        }
        snapshot_id, data = encode_record(record)
        with tracer.start_as_current_span("rok.store.snapshot_record.write") as span:
            span.set_attribute("rok.snapshot.id", snapshot_id)
            await self.repo.backend.put(snapshot_key(snapshot_id), data)
        tally.bytes_uploaded += len(data)
        return snapshot_id


def _locations(packs: list[SealedPack]) -> list[tuple[bytes, Location]]:
    out: list[tuple[bytes, Location]] = []
    for pack in packs:
        for b in pack.blobs:
            out.append((b.chunk, Location(pack.pack_id, b.offset, b.length, b.raw_length, b.flags)))
    return out
