"""``snapshot``: walk, read, chunk, hash, compress and upload, overlapped on all cores.

The walk runs in one thread and hands files that must be read to a small pool; readers cut and hash chunks
(FastCDC and BLAKE3 release the GIL), compress new ones (zstd, in a second pool for big files) and add them
to the packer, whose full packs are uploaded by the event loop with a bounded number in flight.
Commit order: packs, then the index file naming them, then the manifest, then the snapshot record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import blake3
from opentelemetry import trace

from rokstore.archiver.walker import Walker
from rokstore.chunker import MIN_SIZE, iter_chunks
from rokstore.errors import RepositoryLocked
from rokstore.memory import tune_malloc
from rokstore.models import Progress, SnapshotStats
from rokstore.repository import Repository
from rokstore.repository.cache import CachedState, Content, FileCache, Signature
from rokstore.repository.index import Location, encode_index, index_key
from rokstore.repository.manifest import Entry, encode_manifest, encode_record, manifest_key, snapshot_key
from rokstore.repository.packs import BlobRef, Packer, SealedPack, compress, pack_key
from rokstore.xattrs import read_xattrs

tracer = trace.get_tracer("rokstore")

READERS = 3
RACY_WINDOW_NS = 50_000_000  # coarse kernel timestamps: files changed this close to the start are not cached
PACKS_IN_FLIGHT = 2
_O_NOATIME = getattr(os, "O_NOATIME", 0)


async def snapshot(
    repo: Repository,
    path: Path,
    *,
    tags: dict[str, str] | None = None,
    cache_dir: Path | None = None,
    cache_key: str | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> SnapshotStats:
    """Snapshot the directory ``path`` into ``repo``.

    ``cache_key`` names the node-local files cache of this volume (default: the absolute path), so that a
    volume mounted elsewhere next time is still known; ``cache_dir`` replaces the repository's cache directory.
    """
    source = Path(path).absolute()
    key = cache_key or str(source)
    if cache_dir is not None:
        repo.cache_dir = cache_dir
    cache = FileCache(repo.cache_dir, repo.id, key)
    stats = await Archiver(repo, source, dict(tags or {}), cache, progress).run()
    return replace(stats, cache_key=key)


class Archiver(Walker):
    """One snapshot pass over a source directory: walk, read, save chunks, commit."""

    def __init__(
        self,
        repo: Repository,
        source: Path,
        tags: dict[str, str],
        cache: FileCache,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        self.repo = repo
        self.source = source
        self.tags = tags
        self.cache = cache
        self.progress = progress
        self.entries: list[Entry] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.new_files: dict[str, Signature] = {}  # stat signatures of the files whose content is known
        self.new_content: dict[str, Content] = {}  # content of the files read by this snapshot
        self.new_others: dict[str, Signature] = {}  # signatures of the other entries (directories, symlinks, ...)
        self.hits: list[tuple[str, str, Entry, os.stat_result]] = []  # files whose cached content is reused
        self._reuse_manifest = False
        self._missed = False  # set by the walk when a file is queued for reading
        self._state = CachedState()
        self._manifest: tuple[str, bytes] | None = None
        self.failed: set[str] = set()
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._written: list[SealedPack] = []
        self._uploads: list[concurrent.futures.Future[None]] = []
        in_flight = PACKS_IN_FLIGHT if not hasattr(repo.backend, "put_sync") else 2
        self._inflight = threading.BoundedSemaphore(in_flight)
        self._compress_slots = threading.BoundedSemaphore(6)
        self.files = self.dirs = 0
        self.bytes_scanned = self.bytes_read = self.bytes_new = self.bytes_uploaded = 0
        self.files_done = self.files_opened = 0
        self.phase = "scan"

    # ---- threads -------------------------------------------------------------------------------------

    def _emit(self, pack: SealedPack) -> None:
        """Called from worker threads with a full pack; blocks while too many are in flight."""
        self._inflight.acquire()
        key = pack_key(pack.pack_id)
        backend = self.repo.backend
        put_sync = getattr(backend, "put_sync", None)

        async def upload() -> None:
            try:
                with tracer.start_as_current_span("rok.store.pack.upload") as span:
                    span.set_attribute("rok.pack.id", pack.pack_id.hex())
                    span.set_attribute("rok.bytes", len(pack.data))
                    if put_sync is not None:
                        await asyncio.to_thread(put_sync, key, pack.data)
                    else:
                        await backend.put(key, pack.data)
                with self._lock:
                    self._written.append(SealedPack(pack.pack_id, b"", pack.blobs))
                    self.bytes_uploaded += len(pack.data)
            finally:
                self._inflight.release()

        # Reader threads have an empty context: schedule the upload in the snapshot span's context.
        self._uploads.append(self._context.copy().run(asyncio.run_coroutine_threadsafe, upload(), self._loop))

    def _store(self, chunk: bytes, data: bytes | memoryview) -> None:
        """Compress and pack a chunk unless the repository or this snapshot already has it."""
        if chunk in self.index_chunks:
            return
        with self._lock:
            if chunk in self._pending:
                return
            self._pending.add(chunk)
            self.bytes_new += len(data)
        stored, flags = compress(data)
        if isinstance(stored, memoryview):
            stored = bytes(stored)
        self.packer.add(chunk, stored, len(data), flags)

    def _hash_and_store(self, data: memoryview) -> str:
        """A chunk of a large file, in the CPU pool: the reader thread meanwhile reads and cuts the next one."""
        try:
            chunk = blake3.blake3(data).digest()
            self._store(chunk, data)
            return chunk.hex()
        finally:
            self._compress_slots.release()

    def _read_file(self, path: str, rel: str, entry: Entry, st: os.stat_result) -> None:
        try:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | _O_NOATIME)
            except PermissionError:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            self._fail(rel, error)
            return
        jobs: list[concurrent.futures.Future[str]] = []
        try:
            with self._lock:
                self.files_opened += 1
            content: list[list[Any]] = []
            read = 0
            if st.st_size <= MIN_SIZE:
                data = os.read(fd, st.st_size + 1)
                if data:
                    chunk = blake3.blake3(data).digest()
                    self._store(chunk, data)
                    content.append([chunk.hex(), len(data)])
                read = len(data)
            else:
                positions: list[int] = []
                for view, length in iter_chunks(fd, st.st_size, st.st_blocks):
                    if view is None:
                        content.append([None, length])
                        continue
                    self._compress_slots.acquire()
                    jobs.append(self._cpu.submit(self._hash_and_store, view))
                    positions.append(len(content))
                    content.append(["", length])
                    read += length
                    with self._lock:
                        self.bytes_read += length
                for position, job in zip(positions, jobs, strict=True):
                    content[position][0] = job.result()
            for job in jobs:
                job.result()
            entry["c"] = content
            entry["s"] = sum(length for _, length in content)
            xattrs = read_xattrs(path)
            if xattrs:
                entry["x"] = xattrs
            if st.st_ctime_ns < self._racy_after:
                self.new_content[rel] = (content, xattrs)
                self.new_files[rel] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            # else: changed just before the snapshot started, within the file system's timestamp granularity;
            # a write right after our read could leave (size, mtime, ctime) unchanged, so read it again next time.
            with self._lock:
                if st.st_size <= MIN_SIZE:
                    self.bytes_read += read
                self.files_done += 1
        except OSError as error:
            for job in jobs:
                job.result()
            self._fail(rel, error)
        finally:
            os.close(fd)

    def _fail(self, rel: str, error: OSError) -> None:
        with self._lock:
            self.errors.append(f"{rel}: {error.strerror or error}")
            self.failed.add(rel)

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(Progress(self.phase, self.bytes_read, self.bytes_scanned, self.files_done))

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self._report()

    async def run(self) -> SnapshotStats:
        started = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._racy_after = time.time_ns() - RACY_WINDOW_NS
        tune_malloc()
        with tracer.start_as_current_span("rok.store.snapshot") as span:
            span.set_attribute("rok.source", str(self.source))
            self._context = contextvars.copy_context()
            lock = await self.repo.lock("shared")
            try:
                index = await self.repo.load_index()
                self.index_chunks = index.chunks
                state = await asyncio.to_thread(self.cache.load)
                # While the index files the cache was saved against all still exist (gc rewrites them), every
                # chunk the cache names is still stored: no need to look each one up.
                self._cache_trusted = bool(state.index) and state.index <= index.files.keys()
                self._state = state
                content = None if self._cache_trusted else await asyncio.to_thread(state.content)
                self.packer = Packer(self._emit)
                self._queue: queue.Queue[list[tuple[str, str, Entry, os.stat_result]] | None] = queue.Queue(64)
                self._thread_errors: list[BaseException] = []
                self._cpu = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="rok-zstd")
                ticker = asyncio.create_task(self._ticker())
                try:
                    # Many short GIL-releasing syscalls (walk) next to CPU-bound threads: switch more often so
                    # the walker is not starved by the 5 ms default interval.
                    interval = sys.getswitchinterval()
                    sys.setswitchinterval(0.001)
                    try:
                        await asyncio.to_thread(self._walk_and_read, state.files, content)
                    finally:
                        sys.setswitchinterval(interval)
                    self.phase = "upload"
                    self._report()
                    await asyncio.to_thread(self.packer.flush)
                    for upload in list(self._uploads):
                        await asyncio.wrap_future(upload)
                finally:
                    ticker.cancel()
                    self._cpu.shutdown(wait=True, cancel_futures=True)
                    for upload in self._uploads:
                        if not upload.done():
                            await asyncio.wrap_future(upload)
                self.phase = "commit"
                self._report()
                snapshot_id = await self._commit(lock)
                span.set_attribute("rok.snapshot.id", snapshot_id)
                span.set_attribute("rok.bytes", self.bytes_uploaded)
            finally:
                await lock.release()
        if not (self._reuse_manifest and self._cache_trusted):
            await asyncio.to_thread(self._save_cache, list(index.files))
        self.phase = "done"
        self._report()
        self._release()
        return SnapshotStats(
            snapshot_id=snapshot_id,
            files=self.files,
            dirs=self.dirs,
            bytes_scanned=self.bytes_scanned,
            bytes_read=self.bytes_read,
            bytes_new=self.bytes_new,
            bytes_uploaded=self.bytes_uploaded,
            seconds=round(time.monotonic() - started, 3),
            incomplete=bool(self.errors),
            errors=sorted(self.errors),
            warnings=self.warnings,
            files_opened=self.files_opened,
        )

    def _release(self) -> None:
        """Drop the per-file structures now: the packer's callback makes this object part of a reference cycle,
        so they would otherwise wait for the cyclic collector (~40 ms for a 27k-entry tree, often at exit)."""
        self.entries = []
        self.hits = []
        self.new_files = {}
        self.new_content = {}
        self.new_others = {}
        self._state = CachedState()
        self._previous: dict[str, Signature] = {}
        self._content = None

    def _save_cache(self, index_files: list[str]) -> None:
        content = self._state.parts_with(self.new_content, [rel for _, rel, _, _ in self.hits])
        manifest = None if self.errors or self.failed or self.warnings else self._manifest
        self.cache.save(self.new_files, content, self.new_others, index_files, manifest)

    def _fill_hits(self) -> None:
        """Decide whether the cached manifest is this snapshot's; if not, give the unchanged files their content.

        It is when nothing was read, nothing failed, every file the cache knew was found unchanged (so no file
        was added or removed either) and every other entry has the signature it had (a directory's mtime and
        ctime change when a name is added, removed or renamed in it, or its mode, owner or xattrs change).
        """
        state = self._state
        self._reuse_manifest = (
            state.manifest is not None
            and not self._missed
            and self.files_opened == 0
            and not self.errors
            and not self.failed
            and not self.warnings
            and len(self.hits) == len(state.files)
            and self.new_others == state.others
        )
        if self._reuse_manifest:
            return
        content = state.content()
        for path, rel, entry, st in self.hits:
            found = content.get(rel)
            if found is None:  # damaged cache: read the file after all
                del self.new_files[rel]
                self._read_file(path, rel, entry, st)
                continue
            entry["c"] = found[0]
            if found[1]:
                entry["x"] = found[1]

    def _walk_and_read(self, previous: dict[str, Signature], content: dict[str, Content] | None) -> None:
        readers = [threading.Thread(target=self._reader, name=f"rok-read-{i}", daemon=True) for i in range(READERS)]
        for thread in readers:
            thread.start()
        try:
            self._walk(previous, content)
            self._fill_hits()
        finally:
            for _ in readers:
                self._queue.put(None)
            for thread in readers:
                thread.join()
        if self._thread_errors:
            raise self._thread_errors[0]

    def _reader(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._thread_errors:
                continue
            try:
                for path, rel, entry, st in batch:
                    self._read_file(path, rel, entry, st)
            except BaseException as error:
                self._thread_errors.append(error)

    async def _commit(self, lock: Any) -> str:
        entries = self.entries
        if self.failed:
            entries = [e for e in entries if e["p"] not in self.failed and e.get("h") not in self.failed]
        index_ids: list[str] = []
        if self._written:
            index_id, data = encode_index((p.pack_id, p.blobs) for p in self._written)
            with tracer.start_as_current_span("rok.store.index.write") as span:
                span.set_attribute("rok.bytes", len(data))
                if not await lock.still_held():
                    raise RepositoryLocked(
                        f"this snapshot's lock on {self.repo.url} was taken away (paused past its lease?); "
                        "take the snapshot again"
                    )
                await self.repo.backend.put(index_key(index_id), data)
            self.bytes_uploaded += len(data)
            index_ids.append(index_id)
            self.repo.remember_index(index_id, data, self._locations())
        if self._reuse_manifest and self._state.manifest is not None:
            manifest_id, data = self._state.manifest  # the same entries: the same manifest (checked on load)
        else:
            manifest_id, data = await asyncio.to_thread(encode_manifest, entries)
        self._manifest = (manifest_id, data)
        with tracer.start_as_current_span("rok.store.manifest.write") as span:
            span.set_attribute("rok.manifest.id", manifest_id)
            span.set_attribute("rok.bytes", len(data))
            await self.repo.backend.put(manifest_key(manifest_id), data)
        self.bytes_uploaded += len(data)
        record = {
            "version": 1,
            "manifest": manifest_id,
            "time": datetime.datetime.now(datetime.UTC).isoformat(),
            "hostname": socket.gethostname(),
            "path": str(self.source),
            "tags": self.tags,
            "files": self.files,
            "dirs": self.dirs,
            "bytes": self.bytes_scanned,
            "bytes_new": self.bytes_new,
            "incomplete": bool(self.errors),
            "errors": sorted(self.errors)[:1000],
            "index": index_ids,
        }
        snapshot_id, data = encode_record(record)
        with tracer.start_as_current_span("rok.store.snapshot_record.write") as span:
            span.set_attribute("rok.snapshot.id", snapshot_id)
            await self.repo.backend.put(snapshot_key(snapshot_id), data)
        self.bytes_uploaded += len(data)
        return snapshot_id

    def _locations(self) -> list[tuple[bytes, Location]]:
        out: list[tuple[bytes, Location]] = []
        for pack in self._written:
            b: BlobRef
            for b in pack.blobs:
                out.append((b.chunk, Location(pack.pack_id, b.offset, b.length, b.raw_length, b.flags)))
        return out
