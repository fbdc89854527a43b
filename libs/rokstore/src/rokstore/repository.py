"""A repository: its config, its objects and the operations on them (snapshot, restore, list, diff, check, gc)."""

from __future__ import annotations

import asyncio
import datetime
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from rokstore.backends import Backend, open_backend
from rokstore.cache import FileCache, IndexCache, default_cache_dir
from rokstore.chunker import AVG_SIZE, MAX_SIZE, MIN_SIZE
from rokstore.errors import (
    CorruptData,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotNotFound,
    UnsupportedFormat,
)
from rokstore.index import Index, Location, decode_index, index_key
from rokstore.locks import Lock
from rokstore.manifest import Entry, check_paths, decode_manifest, decode_record, manifest_key, snapshot_key
from rokstore.models import (
    CheckReport,
    GcReport,
    Progress,
    RestoreStats,
    SnapshotDiff,
    SnapshotInfo,
    SnapshotStats,
)
from rokstore.packs import PACK_TARGET, ZSTD_LEVEL

FORMAT = "rok-store"
FORMAT_VERSION = 1
CONFIG_KEY = "config"


class Repository:
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

    # ---- building blocks ---------------------------------------------------------------------------

    async def lock(self, kind: str) -> Lock:
        return await Lock(self.backend, kind).acquire()

    async def load_index(self, *, fresh: bool = True) -> Index:
        """All index files, merged; immutable files come from the node-local cache when present."""
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
                index.add_file(name, decode_index(data, name))
        sem = asyncio.Semaphore(16)

        async def fetch(name: str) -> tuple[str, bytes]:
            async with sem:
                return name, await self.backend.get(index_key(name))

        for name, data in await asyncio.gather(*(fetch(n) for n in missing)):
            index.add_file(name, decode_index(data, name))
            await asyncio.to_thread(cache.put, name, data)
        if missing or len(names) != len(index.files):
            await asyncio.to_thread(cache.prune, set(names))
        self._index = index
        return index

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

    # ---- the public operations ---------------------------------------------------------------------

    async def snapshot(
        self,
        path: Path,
        *,
        tags: dict[str, str] | None = None,
        cache_dir: Path | None = None,
        cache_key: str | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> SnapshotStats:
        from dataclasses import replace

        from rokstore.snapshot import Snapshotter

        source = Path(path).absolute()
        key = cache_key or str(source)
        if cache_dir is not None:
            self.cache_dir = cache_dir
        cache = FileCache(self.cache_dir, self.id, key)
        stats = await Snapshotter(self, source, dict(tags or {}), cache, progress).run()
        return replace(stats, cache_key=key)

    async def restore(
        self, snapshot_id: str, target: Path, *, progress: Callable[[Progress], None] | None = None
    ) -> RestoreStats:
        from rokstore.restore import Restorer, prepare_target

        full_id = await self.resolve(snapshot_id)
        lock = await self.lock("shared")
        try:
            record = await self.load_record(full_id)
            entries = await self.load_manifest(record["manifest"])
            check_paths(entries)  # before anything is created
            target = Path(target).absolute()
            await asyncio.to_thread(prepare_target, target)
            return await Restorer(self, full_id, entries, target, progress).run()
        finally:
            await lock.release()

    async def list_snapshots(self) -> list[SnapshotInfo]:
        ids = await self.snapshot_ids()
        sem = asyncio.Semaphore(16)

        async def one(sid: str) -> SnapshotInfo | None:
            async with sem:
                try:
                    r = await self.load_record(sid)
                except ObjectNotFound:  # removed meanwhile
                    return None
            return SnapshotInfo(
                id=sid,
                time=r["time"],
                hostname=r["hostname"],
                path=r["path"],
                tags=r.get("tags", {}),
                files=r.get("files", 0),
                dirs=r.get("dirs", 0),
                bytes=r.get("bytes", 0),
                bytes_new=r.get("bytes_new", 0),
                incomplete=r.get("incomplete", False),
                manifest=r["manifest"],
            )

        infos = [i for i in await asyncio.gather(*(one(s) for s in ids)) if i is not None]
        return sorted(infos, key=lambda i: (i.time, i.id))

    async def diff(self, a_id: str, b_id: str) -> SnapshotDiff:
        a_full, b_full = await self.resolve(a_id), await self.resolve(b_id)
        a = {e["p"]: e for e in await self.load_manifest((await self.load_record(a_full))["manifest"])}
        b = {e["p"]: e for e in await self.load_manifest((await self.load_record(b_full))["manifest"])}
        return SnapshotDiff(
            a=a_full,
            b=b_full,
            added=sorted(p for p in b if p not in a),
            removed=sorted(p for p in a if p not in b),
            changed=sorted(p for p in a if p in b and a[p] != b[p] and p != "."),
        )

    async def check(self, read_data: bool = False) -> CheckReport:
        from rokstore.check import check_repository

        return await check_repository(self, read_data=read_data)

    async def gc(self, dry_run: bool = False) -> GcReport:
        from rokstore.gc import collect_garbage

        return await collect_garbage(self, dry_run=dry_run)


def _new_config() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "id": secrets.token_hex(16),
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        "chunker": {
            "algorithm": "fastcdc2020",
            "avg_size": AVG_SIZE,
            "min_size": MIN_SIZE,
            "max_size": MAX_SIZE,
        },
        "hash": "blake3",
        "compression": {"algorithm": "zstd", "level": ZSTD_LEVEL},
        "pack_size": PACK_TARGET,
    }


async def init_repository(url: str, *, cache_dir: Path | None = None) -> Repository:
    """Create an empty repository at ``url``; an error if one is already there."""
    backend = open_backend(url)
    try:
        await backend.prepare()
        if await backend.exists(CONFIG_KEY):
            raise RepositoryExists(f"a repository already exists at {url}; open it instead of creating it")
        config = _new_config()
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
        try:
            config = json.loads(data)
        except ValueError:
            raise CorruptData(f"the config object of {url} is not valid JSON; the repository is damaged") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise UnsupportedFormat(f"{url} does not hold a rok repository (config format {config.get('format')!r})")
        if config.get("version") != FORMAT_VERSION:
            raise UnsupportedFormat(
                f"repository {url} uses format version {config.get('version')!r}, this rok reads version "
                f"{FORMAT_VERSION}; upgrade rok"
            )
    except BaseException:
        await backend.close()
        raise
    return Repository(backend, config, cache_dir)
