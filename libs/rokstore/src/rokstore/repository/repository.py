"""The repository: its config, its index, its objects and locks, and the snapshots it lists.

This is the layer every operation builds on (``rokstore.archiver``, ``rokstore.restorer``, ``rokstore.checker``,
``rokstore.gc``, ``rokstore.differ``), each a function that takes a :class:`Repository`; it imports none of them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import TracebackType
from typing import Any

import blake3

from rokstore.errors import CorruptData, ObjectNotFound, RepositoryExists, RepositoryNotFound, SnapshotNotFound
from rokstore.models import SnapshotInfo
from rokstore.repository.backends import Backend, open_backend
from rokstore.repository.cache import IndexCache, default_cache_dir
from rokstore.repository.config import CONFIG_KEY, new_config, parse_config
from rokstore.repository.index import Index, Location, decode_index, index_key
from rokstore.repository.locks import Lock
from rokstore.repository.manifest import Entry, decode_manifest, decode_record, manifest_key, snapshot_key


class Repository:
    """An open repository. The operations on it are functions of their own: ``rokstore.snapshot(repo, …)``,
    ``restore``, ``check``, ``collect_garbage``, ``diff``."""

    def __init__(self, backend: Backend, config: dict[str, Any], cache_dir: Path | None = None) -> None:
        self.backend = backend
        self.config = config
        self.id: str = config["id"]
        self.url = backend.url
        self.cache_dir = cache_dir or default_cache_dir()
        self._index: Index | None = None

    async def __aenter__(self) -> Repository:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.backend.close()

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
        names = [info.key.removeprefix("index/") for info in await self.backend.list("index/")]
        index = Index()
        missing: list[str] = []
        for name in names:
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
        if verify_packs:
            gone = index.packs() - set(await self.pack_sizes())
            if gone:
                index = index.without_packs(gone)
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
        if self._index is not None:
            self._index.add_file(index_id, entries)

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

    async def load_record(self, snapshot_id: str) -> dict[str, Any]:
        return decode_record(await self.backend.get(snapshot_key(snapshot_id)), snapshot_id)

    async def load_manifest(self, manifest_id: str) -> list[Entry]:
        data = await self.backend.get(manifest_key(manifest_id))
        return await asyncio.to_thread(decode_manifest, data, manifest_id)

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
            try:
                return SnapshotInfo(
                    id=sid,
                    time=str(r["time"]),
                    hostname=str(r["hostname"]),
                    path=str(r["path"]),
                    tags=dict(r.get("tags", {})),
                    files=int(r.get("files", 0)),
                    dirs=int(r.get("dirs", 0)),
                    bytes=int(r.get("bytes", 0)),
                    bytes_new=int(r.get("bytes_new", 0)),
                    incomplete=bool(r.get("incomplete", False)),
                    manifest=r["manifest"],
                )
            except (KeyError, TypeError, ValueError) as error:
                skipped.append(f"skipped snapshot {sid[:16]}: its record lacks or garbles {error}")
                return None

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
