"""``snapshot``: walk, read, chunk, hash, compress and upload, overlapped on all cores.

The walk (``walker``) runs in one thread and hands files that must be read to a small pool (``reader``);
readers cut and hash chunks (FastCDC and BLAKE3 release the GIL) and hand them to the chunk saver (``saver``),
which compresses new ones (zstd, in a second pool for big files) and packs them; full packs are uploaded by the
event loop with a bounded number in flight. Files the node-local cache knows unchanged (``known``) are not read.
Then the trees of the changed directories are encoded and packed (``committer.TreeSaver``; an unchanged
directory's tree is reused by id). Commit order (``committer``): packs, then the index file naming them, then
the record.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from opentelemetry import trace

from rokstore.archiver.committer import Committer, TreeSaver
from rokstore.archiver.known import KnownFiles
from rokstore.archiver.reader import FileReader
from rokstore.archiver.saver import ChunkSaver
from rokstore.archiver.tally import Tally
from rokstore.archiver.walker import Walker
from rokstore.memory import collector_paused, tune_malloc
from rokstore.models import Progress, SnapshotStats
from rokstore.repository import Repository
from rokstore.repository.cache import FileCache
from rokstore.repository.packs import remove_stale_spools

tracer = trace.get_tracer("rokstore")

RACY_WINDOW_NS = 50_000_000  # coarse kernel timestamps: files changed this close to the start are not cached


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


class Archiver:
    """One snapshot pass over a source directory, made of parts that each own their state:
    :class:`Walker` → :class:`FileReader` → :class:`ChunkSaver` → :class:`TreeSaver` → :class:`Committer`,
    with :class:`KnownFiles` (the node-local cache) and one :class:`Tally` of counts and errors."""

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
        self.tally = Tally(progress)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.tally.report()

    async def run(self) -> SnapshotStats:
        started = time.monotonic()
        racy_after = time.time_ns() - RACY_WINDOW_NS
        tune_malloc()
        tally = self.tally
        with collector_paused(), tracer.start_as_current_span("rok.store.snapshot") as span:
            span.set_attribute("rok.source", str(self.source))
            lock = await self.repo.lock("shared")
            try:
                # Checked against one listing of the packs: chunks of lost packs count as not stored, so this
                # snapshot stores them again instead of committing a reference to data that is gone.
                index = await self.repo.load_index(verify_packs=True)
                known = await KnownFiles.load(self.cache, index, racy_after)
                thread_errors: list[BaseException] = []
                spool = self.repo.spool_dir()
                await asyncio.to_thread(remove_stale_spools, spool)
                saver = ChunkSaver(self.repo.backend, index.chunks, tally, spool)
                reader = FileReader(saver, known, tally, thread_errors)
                walker = Walker(self.source, tally, known, reader)
                ticker = asyncio.create_task(self._ticker())
                try:
                    # Many short GIL-releasing syscalls (walk) next to CPU-bound threads: switch more often so
                    # the walker is not starved by the 5 ms default interval.
                    interval = sys.getswitchinterval()
                    sys.setswitchinterval(0.001)
                    try:
                        unchanged = await asyncio.to_thread(self._walk_and_read, walker, reader, known)
                    finally:
                        sys.setswitchinterval(interval)
                    tally.phase = "upload"
                    tally.report()
                    await saver.flush_data()
                    trees = TreeSaver(saver)
                    with tracer.start_as_current_span("rok.store.trees") as trees_span:
                        root = await asyncio.to_thread(trees.save, walker.listed, unchanged, tally.failed)
                        trees_span.set_attribute("rok.trees.new", len(trees.written))
                        trees_span.set_attribute("rok.trees.reused", len(unchanged))
                    await saver.flush()
                finally:
                    ticker.cancel()
                    await saver.close()
                tally.phase = "commit"
                tally.report()
                committer = Committer(self.repo, tally)
                index_ids = await committer.write_index(lock, saver.written)
                snapshot_id = await committer.write_record(root, walker.entries[0], index_ids, self.source, self.tags)
                self.repo.remember_trees(trees.written)
                span.set_attribute("rok.snapshot.id", snapshot_id)
                span.set_attribute("rok.bytes", tally.bytes_uploaded)
            finally:
                await lock.release()
        if not ("" in unchanged and known.trusted):
            known.save_later(list(index.files), {rel: t.hex() for rel, t in trees.ids.items()}, tally.failed)
        tally.phase = "done"
        tally.report()
        # Drop the per-file structures now: the packer's callback makes the saver part of a reference cycle,
        # so what it holds would otherwise wait for the cyclic collector (~40 ms for a 27k-entry tree).
        saver.release()
        known.release()
        walker.entries = []
        walker.listed = {}
        return SnapshotStats(
            snapshot_id=snapshot_id,
            files=tally.files,
            dirs=tally.dirs,
            bytes_scanned=tally.bytes_scanned,
            bytes_read=tally.bytes_read,
            bytes_new=tally.bytes_new,
            bytes_uploaded=tally.bytes_uploaded,
            seconds=round(time.monotonic() - started, 3),
            incomplete=bool(tally.errors),
            errors=sorted(tally.errors),
            warnings=[*index.warnings, *tally.warnings],
            files_opened=tally.files_opened,
        )

    def _walk_and_read(self, walker: Walker, reader: FileReader, known: KnownFiles) -> dict[str, bytes]:
        """Walk and read (in threads); the unchanged directories, whose cached trees are this snapshot's."""
        reader.start()
        try:
            walker.walk()
            unchanged = known.unchanged_dirs(walker.listed, self.tally.failed)
            if "" not in unchanged:
                walker.materialize(skip=unchanged)
                known.fill_hits(reader.read, skip=unchanged)
        finally:
            reader.stop()
        if reader.thread_errors:
            raise reader.thread_errors[0]
        return unchanged
