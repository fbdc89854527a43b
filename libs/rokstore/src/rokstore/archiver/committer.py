"""Making a snapshot visible, in the crash-safe order: packs (file data, then trees), then the index file naming
them, then the snapshot record. A crash before the record leaves only garbage.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Collection, Mapping
from pathlib import Path

from opentelemetry import trace

from rokstore.archiver.saver import ChunkSaver
from rokstore.archiver.tally import Tally
from rokstore.errors import RepositoryLocked
from rokstore.repository import Repository
from rokstore.repository.index import Location, encode_index, index_key
from rokstore.repository.locks import Lock
from rokstore.repository.manifest import Entry, SnapshotRecord, encode_record, snapshot_key
from rokstore.repository.packs import SealedPack
from rokstore.repository.trees import deepest_first, encode_tree

tracer = trace.get_tracer("rokstore")


class TreeSaver:
    """Encodes the trees of the changed directories, deepest first, and packs the new ones; an unchanged
    directory's tree (``unchanged``, from the node-local cache) is reused by its id without being encoded."""

    def __init__(self, saver: ChunkSaver) -> None:
        self.saver = saver
        self.ids: dict[str, bytes] = {}  # every directory ("" the root) -> its tree id
        self.written: dict[bytes, list[Entry]] = {}  # the trees this snapshot added, decoded

    def save(
        self,
        listed: Mapping[str, tuple[list[Entry] | None, list[str]]],
        unchanged: Mapping[str, bytes],
        failed: Collection[str],
    ) -> bytes:
        """The root tree's id, once every tree below it is encoded (or reused) and handed to the packer."""
        ids = self.ids
        for rel in deepest_first(listed):
            reused = unchanged.get(rel)
            if reused is not None:
                ids[rel] = reused
                continue
            entries = listed[rel][0]
            if entries is None:  # same as cached, yet neither reused nor rebuilt: it failed, and is left out
                continue
            children: list[Entry] = []
            for entry in entries:
                path = entry.path
                if failed and (path in failed or entry.link in failed):
                    continue  # could not be read: left out, named in the record's errors
                if entry.kind == "d":
                    subtree = ids.get(path)
                    if subtree is None:  # its listing never ran (a walker thread failed, and the snapshot with it)
                        continue
                    children.append(entry.at(path.rpartition("/")[2], subtree.hex()))
                else:
                    children.append(entry.at(path.rpartition("/")[2]))
            tree_id, data = encode_tree(children)
            ids[rel] = tree_id
            if self.saver.save_tree(tree_id, data):
                self.written[tree_id] = children
        return ids[""]


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

    async def write_record(
        self, tree: bytes, root: Entry, index_ids: list[str], source: Path, tags: dict[str, str]
    ) -> str:
        """The snapshot record, last: from here on the snapshot exists. Its id. ``root`` is the root directory's
        own entry, whose metadata no tree holds."""
        tally = self.tally
        record = SnapshotRecord(
            tree=tree.hex(),
            root=root,
            time=datetime.datetime.now(datetime.UTC).isoformat(),
            hostname=socket.gethostname(),
            path=str(source),
            tags=tags,
            files=tally.files,
            dirs=tally.dirs,
            bytes=tally.bytes_scanned,
            bytes_new=tally.bytes_new,
            incomplete=bool(tally.errors),
            errors=sorted(tally.errors)[:1000],
            index=index_ids,
        )
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
