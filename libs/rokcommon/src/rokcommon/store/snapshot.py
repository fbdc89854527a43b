"""Taking a snapshot: walk, read, chunk, hash, compress and upload, overlapped on all cores.

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
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3
from opentelemetry import trace

from rokcommon.store.cache import FileCache, FileRecord
from rokcommon.store.chunker import MIN_SIZE, iter_chunks
from rokcommon.store.errors import RepositoryLocked, StorePermanentError
from rokcommon.store.index import Location, encode_index, index_key
from rokcommon.store.manifest import Entry, encode_manifest, encode_record, manifest_key, snapshot_key
from rokcommon.store.memory import tune_malloc
from rokcommon.store.models import Progress, SnapshotStats
from rokcommon.store.packs import BlobRef, Packer, SealedPack, compress, pack_key
from rokcommon.store.xattrs import read_xattrs

if TYPE_CHECKING:
    from rokcommon.store.repository import Repository

tracer = trace.get_tracer("rokcommon.store")

READERS = 3
WALKERS = 3
RACY_WINDOW_NS = 50_000_000  # coarse kernel timestamps: files changed this close to the start are not cached
ReadJob = tuple[str, str, Entry, os.stat_result]  # path, relative path, entry, stat
PACKS_IN_FLIGHT = 2
_O_NOATIME = getattr(os, "O_NOATIME", 0)


class Snapshotter:
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
        self.new_cache: dict[str, FileRecord] = {}
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
        jobs: list[concurrent.futures.Future[None]] = []
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
                self.new_cache[rel] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, content, xattrs)
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

    def _walk(self, previous: dict[str, FileRecord]) -> None:
        """List the tree with a few threads (stat calls release the GIL), then put the entries in order.

        Each directory is one job that lists and stats its children and queues files that must be read; the
        entries are then concatenated depth first in name order, so each directory precedes what it holds.
        """
        root = str(self.source)
        try:
            st = os.lstat(root)
        except OSError as error:
            raise StorePermanentError(f"cannot snapshot {root}: {error.strerror}; give an existing directory") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StorePermanentError(f"{root} is not a directory; snapshot a volume's directory")
        self.entries.append(self._entry(".", root, st, "d"))
        self.dirs += 1
        self._previous = previous
        listed: dict[str, tuple[list[Entry], list[str]]] = {}
        outstanding = [1]
        done = threading.Event()
        pool = concurrent.futures.ThreadPoolExecutor(WALKERS, thread_name_prefix="rok-walk")

        def job(path: str, rel: str) -> None:
            subdirs: list[tuple[str, str]] = []
            try:
                listed[rel] = self._list_dir(path, rel, subdirs)
                with self._lock:
                    outstanding[0] += len(subdirs)
                for sub_path, sub_rel in subdirs:
                    pool.submit(job, sub_path, sub_rel)
            except BaseException as error:
                self._thread_errors.append(error)
            finally:
                with self._lock:
                    outstanding[0] -= 1
                    if outstanding[0] == 0:
                        done.set()

        try:
            pool.submit(job, root, "")
            done.wait()
        finally:
            pool.shutdown(wait=True)
        if self._thread_errors:
            raise self._thread_errors[0]
        stack = [""]
        while stack:
            rel = stack.pop()
            entries, subdirs = listed.get(rel, ([], []))
            self.entries.extend(entries)
            stack.extend(reversed(subdirs))
        # Hard links: the first name in manifest order holds the content, later ones point at it.
        links: dict[tuple[int, int], str] = {}
        batch: list[tuple[str, str, Entry, os.stat_result]] = []
        for entry in self.entries:
            link = entry.pop("_link", None)
            if link is None:
                continue
            identity, path, cst = link
            first = links.get(identity)
            if first is None:
                links[identity] = entry["p"]
                self.bytes_scanned += cst.st_size
                self._cached_or_queued(path, entry["p"], entry, cst, batch)
            else:
                entry["t"] = "h"
                entry["h"] = first
        if batch:
            self._queue.put(batch)

    def _cached_or_queued(
        self,
        path: str,
        rel: str,
        entry: Entry,
        cst: os.stat_result,
        batch: list[tuple[str, str, Entry, os.stat_result]],
    ) -> None:
        cached = self._previous.get(rel)
        if (
            cached is not None
            and cached[:4] == (cst.st_size, cst.st_mtime_ns, cst.st_ctime_ns, cst.st_ino)
            and (self._cache_trusted or all(c is None or bytes.fromhex(c) in self.index_chunks for c, _ in cached[4]))
        ):
            # Same ctime: neither content nor xattrs changed since the cached read.
            entry["c"] = cached[4]
            if len(cached) > 5 and cached[5]:
                entry["x"] = cached[5]
            entry["s"] = cst.st_size
            self.new_cache[rel] = cached
            with self._lock:
                self.files_done += 1
            return
        batch.append((path, rel, entry, cst))
        if len(batch) >= 64:
            self._queue.put(batch[:])
            batch.clear()

    def _list_dir(self, path: str, rel: str, subdirs: list[tuple[str, str]]) -> tuple[list[Entry], list[str]]:
        entries: list[Entry] = []
        batch: list[tuple[str, str, Entry, os.stat_result]] = []
        files = dirs = scanned = 0
        try:
            with os.scandir(path) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as error:
            self._fail(rel or ".", error)
            return entries, []
        for item in items:
            child = f"{rel}/{item.name}" if rel else item.name
            try:
                cst = item.stat(follow_symlinks=False)
            except OSError as error:
                self._fail(child, error)
                continue
            mode = cst.st_mode
            if stat.S_ISDIR(mode):
                entries.append(self._entry(child, item.path, cst, "d"))
                dirs += 1
                subdirs.append((item.path, child))
            elif stat.S_ISREG(mode):
                files += 1
                entry = self._entry(child, item.path, cst, "f", xattrs=False)
                entries.append(entry)
                if cst.st_nlink > 1:
                    # decided once all names are known and in order (see _walk)
                    entry["_link"] = ((cst.st_dev, cst.st_ino), item.path, cst)
                    continue
                scanned += cst.st_size
                self._cached_or_queued(item.path, child, entry, cst, batch)
            elif stat.S_ISLNK(mode):
                entry = self._entry(child, item.path, cst, "l")
                try:
                    entry["l"] = os.readlink(item.path)
                except OSError as error:
                    self._fail(child, error)
                    continue
                entries.append(entry)
            elif stat.S_ISFIFO(mode):
                entries.append(self._entry(child, item.path, cst, "p"))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                entry = self._entry(child, item.path, cst, "c" if stat.S_ISCHR(mode) else "b")
                entry["r"] = cst.st_rdev
                entries.append(entry)
            else:
                with self._lock:
                    self.warnings.append(f"{child}: skipped (a socket or unknown file type)")
        if batch:
            self._queue.put(batch)
        with self._lock:
            self.files += files
            self.dirs += dirs
            self.bytes_scanned += scanned
        return entries, [sub_rel for _, sub_rel in subdirs]

    def _entry(self, rel: str, path: str, st: os.stat_result, kind: str, xattrs: bool = True) -> Entry:
        entry: Entry = {
            "p": rel,
            "t": kind,
            "m": stat.S_IMODE(st.st_mode),
            "u": st.st_uid,
            "g": st.st_gid,
            "mt": st.st_mtime_ns,
        }
        if xattrs:
            found = read_xattrs(path)
            if found:
                entry["x"] = found
        return entry

    # ---- the coroutine -------------------------------------------------------------------------------

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
                previous, cached_index = await asyncio.to_thread(self.cache.load)
                # While the index files the cache was saved against all still exist (gc rewrites them), every
                # chunk the cache names is still stored: no need to look each one up.
                self._cache_trusted = bool(cached_index) and cached_index <= index.files.keys()
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
                        await asyncio.to_thread(self._walk_and_read, previous)
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
        unchanged = self.files_opened == 0 and self._cache_trusted and len(self.new_cache) == len(previous)
        if not unchanged:
            await asyncio.to_thread(self.cache.save, self.new_cache, list(index.files))
        self.phase = "done"
        self._report()
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

    def _walk_and_read(self, previous: dict[str, FileRecord]) -> None:
        readers = [threading.Thread(target=self._reader, name=f"rok-read-{i}", daemon=True) for i in range(READERS)]
        for thread in readers:
            thread.start()
        try:
            self._walk(previous)
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
        manifest_id, data = await asyncio.to_thread(encode_manifest, entries)
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
