"""``restore``: a snapshot into an empty directory: safe paths, verified chunks, parallel pack fetches.

Order: read the snapshot's trees into the walk-order list of entries, check every path
(``manifest.check_paths``), create directories, create regular files at
their size (holes stay holes), fetch packs — a few in flight, each with one (ranged) GET — and write every
chunk after checking it against its BLAKE3 id, then hard links, fifos and devices, then symlinks (last, so
that no path is ever resolved through one), then metadata: owner (as root), mode, xattrs, mtime; directories
deepest first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import stat
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import blake3
from opentelemetry import trace

from rokstore.errors import CorruptData, TargetNotEmpty
from rokstore.memory import tune_malloc
from rokstore.models import Progress, RestoreStats
from rokstore.repository import Repository
from rokstore.repository.index import Location
from rokstore.repository.manifest import Entry, check_paths
from rokstore.repository.packs import decompress, pack_key
from rokstore.xattrs import write_xattrs

tracer = trace.get_tracer("rokstore")

PACKS_IN_FLIGHT = 4
WORKERS = 3
_O_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def prepare_target(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise TargetNotEmpty(f"restore target {target} is not a directory; give an empty or new directory")
    if target.exists():
        if any(target.iterdir()):
            raise TargetNotEmpty(f"restore target {target} is not empty; give an empty or new directory")
    else:
        target.mkdir(parents=True)


async def restore(
    repo: Repository, snapshot_id: str, target: Path, *, progress: Callable[[Progress], None] | None = None
) -> RestoreStats:
    """Restore snapshot ``snapshot_id`` (an id or a unique prefix) into ``target``, an empty or new directory."""
    full_id = await repo.resolve(snapshot_id)
    lock = await repo.lock("shared")
    try:
        record = await repo.load_record(full_id)
        entries = await repo.load_entries(record)
        check_paths(entries)  # before anything is created
        target = Path(target).absolute()
        await asyncio.to_thread(prepare_target, target)
        return await TreeRestorer(repo, full_id, entries, target, progress).run()
    finally:
        await lock.release()


class TreeRestorer:
    """One restore of one snapshot's tree into a prepared target: plan, create, fetch and write, finish."""

    def __init__(
        self,
        repo: Repository,
        snapshot_id: str,
        entries: list[Entry],
        target: Path,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        self.repo = repo
        self.snapshot_id = snapshot_id
        self.entries = entries
        self.target = str(target)
        self.progress = progress
        self.bytes_done = 0
        self.bytes_total = 0
        self.files = 0
        self.warnings: list[str] = []

    def _abs(self, rel: str) -> str:
        return self.target if rel == "." else os.path.join(self.target, rel)

    async def run(self) -> RestoreStats:
        started = time.monotonic()
        tune_malloc()
        check_paths(self.entries)
        with tracer.start_as_current_span("rok.store.restore") as span:
            span.set_attribute("rok.snapshot.id", self.snapshot_id)
            index = await self.repo.load_index()
            plan = self._plan(index.chunks)
            await asyncio.to_thread(self._create_tree)
            await self._fetch_all(plan)
            await asyncio.to_thread(self._finish_tree)
            span.set_attribute("rok.bytes", self.bytes_done)
        if self.progress:
            self.progress(Progress("done", self.bytes_done, self.bytes_total, self.files))
        return RestoreStats(
            snapshot_id=self.snapshot_id,
            files=self.files,
            bytes=self.bytes_total,
            seconds=round(time.monotonic() - started, 3),
            warnings=self.warnings,
        )

    def _plan(self, chunks: dict[bytes, Location]) -> dict[bytes, dict[bytes, tuple[Location, list[tuple[str, int]]]]]:
        """pack -> chunk -> (location, [(file, offset), ...])."""
        plan: dict[bytes, dict[bytes, tuple[Location, list[tuple[str, int]]]]] = defaultdict(dict)
        for entry in self.entries:
            if entry["t"] not in ("f", "h"):
                continue
            self.files += 1
            if entry["t"] != "f":
                continue
            offset = 0
            path = self._abs(entry["p"])
            for chunk_hex, length in entry.get("c", ()):
                if chunk_hex is not None:
                    chunk = bytes.fromhex(chunk_hex)
                    location = chunks.get(chunk)
                    if location is None:
                        raise CorruptData(
                            f"chunk {chunk_hex} of {entry['p']!r} in snapshot {self.snapshot_id[:12]} is not in "
                            "the repository's index; run 'rok repo check'"
                        )
                    slot = plan[location.pack].get(chunk)
                    if slot is None:
                        plan[location.pack][chunk] = (location, [(path, offset)])
                    else:
                        slot[1].append((path, offset))
                    self.bytes_total += length
                offset += length
        return plan

    def _create_tree(self) -> None:
        files: list[Entry] = []
        for entry in self.entries:
            kind, rel = entry["t"], entry["p"]
            if kind == "d" and rel != ".":
                os.mkdir(self._abs(rel), 0o700)
            elif kind == "f":
                files.append(entry)
        # Creating files is kernel work that releases the GIL: a few threads, in slices.
        _in_parallel(self._create_files, files)

    def _create_files(self, entries: list[Entry]) -> None:
        for entry in entries:
            fd = os.open(self._abs(entry["p"]), _O_WRITE | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                size = entry.get("s", 0)
                if size:
                    os.ftruncate(fd, size)
            finally:
                os.close(fd)

    async def _fetch_all(self, plan: dict[bytes, dict[bytes, tuple[Location, list[tuple[str, int]]]]]) -> None:
        loop = asyncio.get_running_loop()
        backend = self.repo.backend
        get_sync = getattr(backend, "get_sync", None)
        slots = asyncio.Semaphore(PACKS_IN_FLIGHT)
        with concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="rok-restore") as pool:

            async def one(pack: bytes, wanted: dict[bytes, tuple[Location, list[tuple[str, int]]]]) -> None:
                async with slots:
                    with tracer.start_as_current_span("rok.store.pack.download") as span:
                        span.set_attribute("rok.pack.id", pack.hex())
                        start = min(loc.offset for loc, _ in wanted.values())
                        end = max(loc.offset + loc.length for loc, _ in wanted.values())
                        span.set_attribute("rok.bytes", end - start)
                        key = pack_key(pack)
                        if get_sync is not None:
                            await loop.run_in_executor(pool, self._read_and_write, get_sync, key, start, end, wanted)
                        else:
                            data = await backend.get_range(key, start, end - start)
                            await loop.run_in_executor(pool, self._write_blobs, data, start, wanted)
                    if self.progress:
                        self.progress(Progress("restore", self.bytes_done, self.bytes_total, self.files))

            tasks = [asyncio.ensure_future(one(pack, wanted)) for pack, wanted in plan.items()]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _read_and_write(
        self,
        get_sync: Callable[[str, int, int], bytes],
        key: str,
        start: int,
        end: int,
        wanted: dict[bytes, tuple[Location, list[tuple[str, int]]]],
    ) -> None:
        self._write_blobs(get_sync(key, start, end - start), start, wanted)

    def _write_blobs(
        self, data: bytes, start: int, wanted: dict[bytes, tuple[Location, list[tuple[str, int]]]]
    ) -> None:
        view = memoryview(data)
        for chunk, (loc, targets) in wanted.items():
            blob = view[loc.offset - start : loc.offset - start + loc.length]
            try:
                raw = decompress(blob, loc.flags, loc.raw_length)
            except CorruptData:  # damaged compressed bytes: the same failure as a hash mismatch
                raw = b""
            if len(raw) != loc.raw_length or blake3.blake3(raw).digest() != chunk:
                raise CorruptData(
                    f"chunk {chunk.hex()} in pack {loc.pack.hex()[:16]} does not match its BLAKE3 id "
                    f"(restoring {os.path.relpath(targets[0][0], self.target)!r}); the repository is damaged: "
                    "run 'rok repo check --read-data'"
                )
            for path, offset in targets:
                fd = os.open(path, _O_WRITE)
                try:
                    os.pwrite(fd, raw, offset)
                finally:
                    os.close(fd)
                self.bytes_done += len(raw)

    def _finish_tree(self) -> None:
        as_root = os.geteuid() == 0
        for entry in self.entries:
            kind, rel = entry["t"], entry["p"]
            path = self._abs(rel)
            if kind == "h":
                os.link(self._abs(entry["h"]), path, follow_symlinks=False)
            elif kind == "p":
                os.mkfifo(path, 0o600)
            elif kind in ("c", "b"):
                if not as_root:
                    self.warnings.append(f"{rel}: device file skipped (restoring devices needs root)")
                    continue
                os.mknod(path, 0o600 | (stat.S_IFCHR if kind == "c" else stat.S_IFBLK), entry.get("r", 0))
        for entry in self.entries:
            if entry["t"] == "l":
                os.symlink(entry["l"], self._abs(entry["p"]))
        dirs: list[Entry] = []
        others: list[Entry] = []
        for entry in self.entries:
            kind = entry["t"]
            if kind == "d":
                dirs.append(entry)
            elif kind != "h" and not (kind in ("c", "b") and not as_root):
                others.append(entry)

        def apply(part: list[Entry]) -> None:
            for e in part:
                self._metadata(e, as_root)

        _in_parallel(apply, others)
        for entry in reversed(dirs):  # deepest first, after everything inside them
            self._metadata(entry, as_root)

    def _metadata(self, entry: Entry, as_root: bool) -> None:
        path = self._abs(entry["p"])
        is_link = entry["t"] == "l"
        if as_root:
            try:
                os.chown(path, entry["u"], entry["g"], follow_symlinks=False)
            except OSError as error:
                self.warnings.append(f"{entry['p']}: owner not restored ({error.strerror})")
        if not is_link:
            os.chmod(path, entry["m"])
        if entry.get("x"):
            for name in write_xattrs(path, entry["x"]):
                self.warnings.append(f"{entry['p']}: extended attribute {name} not restored")
        mtime = entry["mt"]
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def _in_parallel(work: Callable[[list[Entry]], object], items: list[Entry], threads: int = 4) -> None:
    if len(items) < 256:
        work(items)
        return
    step = (len(items) + threads - 1) // threads
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="rok-tree") as pool:
        for future in [pool.submit(work, items[i : i + step]) for i in range(0, len(items), step)]:
            future.result()
