"""The repository: its config, its index, its objects and locks, and the snapshots it lists.

This is the layer every operation builds on (``rokstore.archiver``, ``rokstore.restorer``, ``rokstore.checker``,
``rokstore.gc``, ``rokstore.differ``), each a function that takes a :class:`Repository`; it imports none of them.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import blake3

from rokstore.errors import (
    CorruptData,
    MissingBlob,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotNotFound,
)
from rokstore.models import SnapshotInfo
from rokstore.repository.backends import Backend, open_backend
from rokstore.repository.cache import IndexCache, default_cache_dir
from rokstore.repository.config import CONFIG_KEY, new_config, parse_config
from rokstore.repository.index import Index, Location, decode_index, index_key
from rokstore.repository.locks import Lock
from rokstore.repository.manifest import Entry, SnapshotRecord, decode_record, snapshot_key
from rokstore.repository.packs import decompress, pack_key
from rokstore.repository.trees import decode_tree, flatten, subtrees

PACKS_IN_FLIGHT = 8  # ranged GETs of tree packs at once
TREE_MEMORY = 200_000  # entries of decoded trees kept in memory (reused by the next diff or snapshot)


class Repository:
    """An open repository. The operations on it are functions of their own: ``rokstore.snapshot(repo, …)``,
    ``restore``, ``check``, ``collect_garbage``, ``diff``."""

    def __init__(self, backend: Backend, config: dict[str, Any], cache_dir: Path | None = None) -> None:
        self.backend = backend
        self.config = config
        self.id: str = config["id"]
        self.url = backend.url
        self.cache_dir = cache_dir or default_cache_dir()
        self._index: Index | None = None  # the last index loaded, as its caller uses it
        self._read: Index | None = None  # every index file this process has read, merged
        self._trees: OrderedDict[bytes, list[Entry]] = OrderedDict()  # recently read or written, newest last
        self._tree_entries = 0

    async def __aenter__(self) -> Repository:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.backend.close()

    def spool_dir(self) -> Path:
        """Where a snapshot writes its packs while they fill: inside a local repository (a full pack is renamed
        into place), else the node-local cache (a full pack is uploaded from there, then removed)."""
        local = getattr(self.backend, "spool_dir", None)
        return local() if local is not None else self.cache_dir / "spool"

    async def read_config(self) -> dict[str, Any]:
        """The config object as stored now: one small read that proves the store answers and still holds this
        repository (what health checks ask)."""
        try:
            data = await self.backend.get(CONFIG_KEY)
        except ObjectNotFound:
            raise RepositoryNotFound(f"the rok repository at {self.url} is gone (no config object)") from None
        return parse_config(data, self.url)

    async def lock(self, kind: str) -> Lock:
        return await Lock(self.backend, kind).acquire()

    async def load_index(self, *, fresh: bool = True, verify_packs: bool = False) -> Index:
        """All index files, merged; immutable files come from the node-local cache when present.

        A damaged index file is left out (``Index.damaged``): only snapshots that need its chunks are affected.
        With ``verify_packs`` one listing of the packs checks what the index claims, and chunks whose packs are
        gone count as not stored (``Index.missing_packs``): a snapshot stores them again instead of referring
        to lost data, and a restore looks for them in another pack.
        """
        if self._index is not None and not fresh:
            return self._index
        cache = IndexCache(self.cache_dir, self.id)
        listing = self.backend.list("index/")
        if verify_packs:  # both listings at once: a round trip each, and the longer of them on S3
            listed, stored_packs = await asyncio.gather(listing, self.pack_sizes())
        else:
            listed, stored_packs = await listing, {}
        names = [info.key.removeprefix("index/") for info in listed]
        # Index files are immutable: those this process read already are not decoded again, unless gc removed
        # some (then the index is rebuilt from what is there now).
        known = self._read
        if known is not None and (known.files.keys() | known.damaged.keys()) <= set(names):
            index = known.copy()
        else:
            index = Index()
        missing: list[str] = []
        for name in names:
            if name in index.files or name in index.damaged:
                continue
            data = await asyncio.to_thread(cache.get, name)
            if data is None:
                missing.append(name)
            else:
                index.add_file(name, decode_index(data, name))  # verified against its id by the cache
        sem = asyncio.Semaphore(16)

        async def fetch(name: str) -> tuple[str, bytes | None]:
            async with sem:
                try:
                    return name, await self.backend.get(index_key(name))
                except ObjectNotFound:  # removed by gc since the listing
                    return name, None

        for name, data in await asyncio.gather(*(fetch(n) for n in missing)):
            if data is None:
                continue
            try:
                if blake3.blake3(data).hexdigest() != name:
                    raise CorruptData(
                        f"index file {name!r} does not match its BLAKE3 id; "
                        "rebuild the index with 'rok repo repair-index'"
                    )
                entries = decode_index(data, name)
            except CorruptData as error:
                index.damaged[name] = str(error)
                continue
            index.add_file(name, entries)
            await asyncio.to_thread(cache.put, name, data)
        if missing or len(names) != len(index.files):
            await asyncio.to_thread(cache.prune, set(names))
        self._read = index
        if verify_packs:
            gone = index.packs() - stored_packs.keys()
            if gone:
                index = index.without_packs(gone)
        if index is self._read:
            index = index.copy()  # the caller may add to it (remember_index); what was read stays apart
        self._index = index
        return index

    async def pack_sizes(self) -> dict[bytes, int]:
        """Every pack in storage and its size, from one listing."""
        out: dict[bytes, int] = {}
        for info in await self.backend.list("packs/"):
            name = info.key.rsplit("/", 1)[-1]
            if len(name) == 64:
                try:
                    out[bytes.fromhex(name)] = info.size
                except ValueError:
                    continue
        return out

    def remember_index(self, index_id: str, data: bytes, entries: list[tuple[bytes, Location]]) -> None:
        IndexCache(self.cache_dir, self.id).put(index_id, data)
        for index in (self._index, self._read):
            if index is not None and index_id not in index.files:
                index.add_file(index_id, entries)

    async def snapshot_ids(self) -> list[str]:
        return sorted(info.key.removeprefix("snapshots/") for info in await self.backend.list("snapshots/"))

    async def resolve(self, prefix: str) -> str:
        prefix = prefix.strip().lower()
        if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
            raise SnapshotNotFound(f"snapshot id {prefix!r} is not valid; give at least 8 hex characters")
        matches = [s for s in await self.snapshot_ids() if s.startswith(prefix)]
        if not matches:
            raise SnapshotNotFound(
                f"no snapshot {prefix!r} in {self.url}; list them with 'rok snapshot ls --repo {self.url}'"
            )
        if len(matches) > 1:
            raise SnapshotNotFound(f"snapshot id prefix {prefix!r} is ambiguous in {self.url}; give more characters")
        return matches[0]

    async def load_record(self, snapshot_id: str) -> SnapshotRecord:
        return decode_record(await self.backend.get(snapshot_key(snapshot_id)), snapshot_id)

    async def read_blobs(self, blobs: Iterable[bytes], what: str = "blob") -> dict[bytes, bytes]:
        """The raw bytes of ``blobs``, each checked against its id: one ranged GET per pack, a few at once."""
        wanted = set(blobs)
        index = await self.load_index(fresh=False)
        if any(b not in index.chunks for b in wanted):  # written since the index was loaded?
            index = await self.load_index()
        by_pack: dict[bytes, list[tuple[bytes, Location]]] = defaultdict(list)
        for blob in wanted:
            location = index.chunks.get(blob)
            if location is None:
                raise MissingBlob(blob, what)
            by_pack[location.pack].append((blob, location))
        slots = asyncio.Semaphore(PACKS_IN_FLIGHT)
        out: dict[bytes, bytes] = {}

        async def one(pack: bytes, located: list[tuple[bytes, Location]]) -> None:
            start = min(loc.offset for _, loc in located)
            end = max(loc.offset + loc.length for _, loc in located)
            async with slots:
                data = await self.backend.get_range(pack_key(pack), start, end - start)
            for blob, loc in located:
                stored = data[loc.offset - start : loc.offset - start + loc.length]
                try:
                    raw = bytes(decompress(stored, loc.flags, loc.raw_length))
                except CorruptData:  # damaged compressed bytes: the same failure as a hash mismatch
                    raw = b""
                if len(raw) != loc.raw_length or blake3.blake3(raw).digest() != blob:
                    raise CorruptData(
                        f"{what} {blob.hex()} in pack {pack.hex()[:16]} does not match its BLAKE3 id; the repository "
                        "is damaged: run 'rok repo check --read-data'"
                    )
                out[blob] = raw

        await asyncio.gather(*(one(pack, located) for pack, located in by_pack.items()))
        return out

    async def load_trees(self, tree_ids: Iterable[bytes], *, from_storage: bool = False) -> dict[bytes, list[Entry]]:
        """The decoded trees ``tree_ids``: from memory when this process read or wrote them lately, unless
        ``from_storage`` (check and gc judge what the repository holds, not what this process remembers)."""
        found: dict[bytes, list[Entry]] = {}
        missing: list[bytes] = []
        for tree_id in set(tree_ids):
            entries = None if from_storage else self._trees.get(tree_id)
            if entries is None:
                missing.append(tree_id)
            else:
                self._trees.move_to_end(tree_id)
                found[tree_id] = entries
        if missing:
            raw = await self.read_blobs(missing, "tree")
            decoded = await asyncio.to_thread(lambda: {t: decode_tree(raw[t], t) for t in missing})
            self.remember_trees(decoded)
            found.update(decoded)
        return found

    def remember_trees(self, trees: dict[bytes, list[Entry]]) -> None:
        """Keep recently used trees in memory, up to ``TREE_MEMORY`` entries in all (they are immutable)."""
        for tree_id, entries in trees.items():
            if tree_id not in self._trees:
                self._trees[tree_id] = entries
                self._tree_entries += len(entries)
        while self._tree_entries > TREE_MEMORY and len(self._trees) > 1:
            _, dropped = self._trees.popitem(last=False)
            self._tree_entries -= len(dropped)

    async def load_tree_closure(
        self, root: bytes, known: dict[bytes, list[Entry]] | None = None, *, from_storage: bool = False
    ) -> dict[bytes, list[Entry]]:
        """Every tree reachable from ``root``, read level by level (one batch of GETs per level); trees
        already in ``known`` are not read again, and ``known`` is filled with what was read."""
        trees = known if known is not None else {}
        level = {root}
        reached: dict[bytes, list[Entry]] = {}
        while level:
            need = [t for t in level if t not in trees]
            if need:
                trees.update(await self.load_trees(need, from_storage=from_storage))
            following: set[bytes] = set()
            for tree_id in level:
                reached[tree_id] = trees[tree_id]
                following.update(s for s in subtrees(trees[tree_id]) if s not in reached)
            level = following
        return reached

    async def load_entries(self, record: SnapshotRecord) -> list[Entry]:
        """A snapshot's entries in walk order, each with its path ``p`` (``"."`` is the root)."""
        root = bytes.fromhex(record.tree)
        trees = await self.load_tree_closure(root)
        return await asyncio.to_thread(flatten, record.root, root, trees)

    async def list_snapshots(self) -> list[SnapshotInfo]:
        """The snapshots whose records can be read, oldest first (see :meth:`scan_snapshots`)."""
        return (await self.scan_snapshots())[0]

    async def scan_snapshots(self) -> tuple[list[SnapshotInfo], list[str]]:
        """The snapshots whose records can be read, oldest first, and one line per record that was skipped."""
        ids = await self.snapshot_ids()
        sem = asyncio.Semaphore(16)
        skipped: list[str] = []

        async def one(sid: str) -> SnapshotInfo | None:
            async with sem:
                try:
                    r = await self.load_record(sid)
                except ObjectNotFound:  # removed meanwhile
                    return None
                except CorruptData as error:
                    skipped.append(f"skipped snapshot {sid[:16]}: {error}")
                    return None
            return SnapshotInfo(
                id=sid,
                time=r.time,
                hostname=r.hostname,
                path=r.path,
                tags=dict(r.tags),
                files=r.files,
                dirs=r.dirs,
                bytes=r.bytes,
                bytes_new=r.bytes_new,
                incomplete=r.incomplete,
                tree=r.tree,
            )

        infos = [i for i in await asyncio.gather(*(one(s) for s in ids)) if i is not None]
        return sorted(infos, key=lambda i: (i.time, i.id)), sorted(skipped)


async def init_repository(url: str, *, cache_dir: Path | None = None) -> Repository:
    """Create an empty repository at ``url``; an error if one is already there."""
    backend = open_backend(url)
    try:
        await backend.prepare()
        if await backend.exists(CONFIG_KEY):
            raise RepositoryExists(f"a repository already exists at {url}; open it instead of creating it")
        config = new_config()
        await backend.put(CONFIG_KEY, json.dumps(config, indent=1).encode())
    except BaseException:
        await backend.close()
        raise
    return Repository(backend, config, cache_dir)


async def open_repository(url: str, *, cache_dir: Path | None = None) -> Repository:
    """Open an existing repository; RepositoryNotFound or UnsupportedFormat when it cannot be used."""
    backend = open_backend(url)
    try:
        try:
            data = await backend.get(CONFIG_KEY)
        except (ObjectNotFound, RepositoryNotFound):
            raise RepositoryNotFound(
                f"no rok repository at {url}; create one with 'rok repo init --repo {url}'"
            ) from None
        config = parse_config(data, url)
    except BaseException:
        await backend.close()
        raise
    return Repository(backend, config, cache_dir)
