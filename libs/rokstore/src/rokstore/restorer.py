"""``restore``: a snapshot into an empty directory: safe paths, verified chunks, parallel pack fetches.

Order: read the snapshot's trees into the walk-order list of entries and check every path
(``manifest.check_paths``); open a private staging directory on the target's
file system (``staging.Staging``); create directories, create the regular files of several chunks (or none) at
their size (holes stay holes), fetch packs in pieces of ~4 MiB — a few in flight, each one (ranged) GET — and
write every chunk after checking it against its BLAKE3 id (a file that is one chunk, most of a volume's, is
created, written, checked and given its metadata on one descriptor as its chunk arrives); check every other
file's size (with ``verify``, read every file back and check what was written against its chunks' ids); then
hard links, fifos and (when asked) devices, then symlinks (last, so that no path is ever resolved through one),
then metadata: owner (as root), mode (set-uid and set-gid bits of files only when asked), xattrs, mtime,
directories deepest first; and, right before putting it in place, check that the tree holds exactly the
snapshot's names and types. Every path is opened relative to its parent's descriptor, never following a symlink
(``confined.ConfinedTree``). A restore that fails removes what it wrote and names the first damaged path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import stat
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import blake3
from opentelemetry import trace

from rokstore.chunker import MAX_SIZE
from rokstore.confined import O_READ, O_WRITE, ConfinedTree, Written, kind_matches
from rokstore.errors import CorruptData, MissingBlob, ObjectNotFound, RestoreFailed
from rokstore.memory import collector_paused, tune_malloc
from rokstore.models import Progress, RestoreStats
from rokstore.repository import Repository
from rokstore.repository.index import Location
from rokstore.repository.manifest import Entry, check_paths
from rokstore.repository.packs import decompress, pack_key
from rokstore.staging import Staging

tracer = trace.get_tracer("rokstore")

PIECES_IN_FLIGHT = 6  # reads of packs at once, each of about READ_PIECE bytes (a ranged GET on S3)
READ_PIECE = 4 << 20
WORKERS = 3
MAX_FILE_SIZE = 1 << 50  # 1 PiB: no volume holds a larger file; a snapshot that claims one is damaged
_SET_ID = stat.S_ISUID | stat.S_ISGID

Targets = list[tuple[str, int]]  # (path relative to the target, offset) where a chunk goes
Plan = dict[bytes, dict[bytes, tuple[Location, Targets]]]  # pack -> chunk -> (location, targets)


async def restore(
    repo: Repository,
    snapshot_id: str,
    target: Path,
    *,
    progress: Callable[[Progress], None] | None = None,
    devices: bool = False,
    keep_setuid: bool = False,
    verify: bool = False,
) -> RestoreStats:
    """Restore snapshot ``snapshot_id`` (an id or a unique prefix) into ``target``, an empty or new directory.

    Device files are created only with ``devices`` (and as root); set-uid and set-gid bits of files are
    restored only with ``keep_setuid``. Every chunk is checked against its id before it is written, and nothing is
    in place at ``target`` until every file has its size and the tree the snapshot's names; ``verify`` also
    reads every file back and checks each chunk again (as ``restic restore --verify``), which costs a second
    pass over the data.
    """
    with collector_paused():
        return await _restore(repo, snapshot_id, target, progress, devices, keep_setuid, verify)


async def _restore(
    repo: Repository,
    snapshot_id: str,
    target: Path,
    progress: Callable[[Progress], None] | None,
    devices: bool,
    keep_setuid: bool,
    verify: bool,
) -> RestoreStats:
    full_id = await repo.resolve(snapshot_id)
    lock = await repo.lock("shared")
    try:
        record = await repo.load_record(full_id)
        try:
            entries = await repo.load_entries(record)
        except MissingBlob as error:
            raise MissingBlob(error.blob, error.what, f" in snapshot {full_id[:12]}") from None
        check_paths(entries)  # before anything is created
        target = Path(target).absolute()
        staging = await asyncio.to_thread(Staging.open, target)
        try:
            restorer = TreeRestorer(repo, full_id, entries, staging.tree, progress, devices, keep_setuid, verify)
            stats = await restorer.run()
            problems = await asyncio.to_thread(staging.commit, restorer.verify_structure)
            stats = replace(stats, warnings=[*stats.warnings, *problems])
        except BaseException:
            await asyncio.to_thread(staging.discard)
            raise
        finally:
            staging.close()
        if progress:
            progress(Progress("done", stats.bytes, stats.bytes, stats.files))
        return stats
    finally:
        await lock.release()


class TreeRestorer:
    """One restore of one snapshot's tree into a staging tree: plan, create, fetch and write, verify, finish."""

    def __init__(
        self,
        repo: Repository,
        snapshot_id: str,
        entries: list[Entry],
        tree: ConfinedTree,
        progress: Callable[[Progress], None] | None,
        devices: bool = False,
        keep_setuid: bool = False,
        verify: bool = False,
    ) -> None:
        self.repo = repo
        self.verify = verify
        self.snapshot_id = snapshot_id
        self.entries = entries
        self.tree = tree
        self.target = tree.where
        self.progress = progress
        self.devices = devices
        self.keep_setuid = keep_setuid
        self.bytes_done = 0
        self.bytes_total = 0
        self.files = 0
        self.warnings: list[str] = []
        self._whole: dict[str, Entry] = {}  # files that are one chunk: made whole when it arrives (_write_whole)
        self._as_root = os.geteuid() == 0

    async def run(self) -> RestoreStats:
        started = time.monotonic()
        tune_malloc()
        with tracer.start_as_current_span("rok.store.restore") as span:
            span.set_attribute("rok.snapshot.id", self.snapshot_id)
            # Checked against one listing of the packs: a chunk is fetched from a pack that exists, and one
            # that no existing pack holds is named before anything is fetched.
            index = await self.repo.load_index(verify_packs=True)
            self.warnings += index.warnings
            plan = self._plan(index.chunks)
            await asyncio.to_thread(self._create_tree)
            await self._fetch_all(plan)
            self.tree.forget()  # from here on every path is walked again, component by component
            await asyncio.to_thread(self._verify_files if self.verify else self._check_sizes)
            await asyncio.to_thread(self._finish_tree)
            span.set_attribute("rok.bytes", self.bytes_done)
        return RestoreStats(
            snapshot_id=self.snapshot_id,
            files=self.files,
            bytes=self.bytes_total,
            seconds=round(time.monotonic() - started, 3),
            warnings=self.warnings,
        )

    def _plan(self, chunks: dict[bytes, Location]) -> Plan:
        """pack -> chunk -> (location, [(file, offset), ...])."""
        plan: Plan = defaultdict(dict)
        for entry in self.entries:
            if entry.kind not in ("f", "h"):
                continue
            self.files += 1
            if entry.kind != "f":
                continue
            offset = 0
            path = entry.path
            content = entry.content or []
            if len(content) == 1 and content[0][0] is not None and content[0][1] == entry.size:
                self._whole[path] = entry
            for chunk_hex, length in content:
                if chunk_hex is not None:
                    chunk = bytes.fromhex(chunk_hex)
                    location = chunks.get(chunk)
                    if location is None:
                        raise CorruptData(
                            f"chunk {chunk_hex} of {entry.path!r} in snapshot {self.snapshot_id[:12]} is not in "
                            "any pack that exists; run 'rok repo check'"
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
            kind, rel = entry.kind, entry.path
            if kind == "d" and rel != ".":
                self.tree.mkdir(rel)
            elif kind == "f" and rel not in self._whole:
                files.append(entry)
        # Creating files is kernel work that releases the GIL: a few threads, in slices.
        _in_parallel(self._create_files, files)

    def _create_files(self, entries: list[Entry]) -> None:
        for entry in entries:
            size = entry.size or 0
            if not isinstance(size, int) or not 0 <= size <= MAX_FILE_SIZE:
                raise CorruptData(
                    f"file {entry.path!r} of snapshot {self.snapshot_id[:12]} claims a size of {size!r} bytes, "
                    f"more than any volume holds: the snapshot is damaged; nothing was restored into {self.target}"
                )
            self.tree.create(entry.path, size)

    async def _fetch_all(self, plan: Plan) -> None:
        loop = asyncio.get_running_loop()
        backend = self.repo.backend
        get_sync = getattr(backend, "get_sync", None)
        slots = asyncio.Semaphore(PIECES_IN_FLIGHT)
        with concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="rok-restore") as pool:

            async def one(pack: bytes, start: int, end: int, wanted: dict[bytes, tuple[Location, Targets]]) -> None:
                async with slots:
                    with tracer.start_as_current_span("rok.store.pack.download") as span:
                        span.set_attribute("rok.pack.id", pack.hex())
                        span.set_attribute("rok.bytes", end - start)
                        key = pack_key(pack)
                        try:
                            if get_sync is not None:
                                await loop.run_in_executor(
                                    pool, self._read_and_write, get_sync, key, start, end, wanted
                                )
                            else:
                                data = await backend.get_range(key, start, end - start)
                                await loop.run_in_executor(pool, self._write_blobs, data, start, wanted)
                        except ObjectNotFound:
                            first = min(path for _, targets in wanted.values() for path, _ in targets)
                            raise CorruptData(
                                f"pack {pack.hex()[:16]} is missing from the repository (restoring {first!r} of "
                                f"snapshot {self.snapshot_id[:12]}); run 'rok repo check'"
                            ) from None
                    if self.progress:
                        self.progress(Progress("restore", self.bytes_done, self.bytes_total, self.files))

            tasks = [
                asyncio.ensure_future(one(pack, start, end, piece))
                for pack, wanted in plan.items()
                for start, end, piece in pieces(wanted)
            ]
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
        wanted: dict[bytes, tuple[Location, Targets]],
    ) -> None:
        self._write_blobs(get_sync(key, start, end - start), start, wanted)

    def _write_blobs(self, data: bytes, start: int, wanted: dict[bytes, tuple[Location, Targets]]) -> None:
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
                    f"(restoring {targets[0][0]!r}); the repository is damaged: "
                    "run 'rok repo check --read-data'"
                )
            for path, offset in targets:
                whole = self._whole.get(path)
                if whole is not None:
                    self._write_whole(whole, raw)
                    continue
                fd = self.tree.open(path, O_WRITE)
                try:
                    self._pwrite(fd, path, raw, offset)
                finally:
                    os.close(fd)
                self.bytes_done += len(raw)

    def _pwrite(self, fd: int, path: str, raw: bytes, offset: int) -> None:
        try:
            if os.pwrite(fd, raw, offset) != len(raw):
                raise RestoreFailed(f"cannot write {path!r} in {self.target}: short write")
        except OSError as error:
            raise self.tree.failed("write", path, error) from None

    def _write_whole(self, entry: Entry, raw: bytes) -> None:
        """Create the file that is this one chunk, write it and give it its metadata on one descriptor
        (:meth:`ConfinedTree.write_new`), and check it."""
        mode, owner = self._mode_and_owner(entry)
        written = self.tree.write_new(entry.path, raw, mode, owner, entry.mtime_ns, entry.xattrs)
        self._check_is_the_file(entry.path, entry, written)
        self.warnings += written.problems
        self.bytes_done += len(raw)

    def _check_sizes(self) -> None:
        """Every restored file is a regular file of its snapshot's size (what a lost ftruncate or a swapped file
        would change); its content was checked chunk by chunk on the way in."""
        for entry in self.entries:
            if entry.kind != "f" or entry.path in self._whole:  # checked on its descriptor when it was written
                continue
            rel = entry.path
            fd = self.tree.open(rel, O_READ)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            self._check_is_the_file(rel, entry, st)

    def _check_is_the_file(self, rel: str, entry: Entry, st: os.stat_result | Written) -> None:
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            raise CorruptData(
                f"restored file {rel!r} in {self.target} is not the snapshot's ({st.st_size} bytes, "
                f"{entry.size or 0} expected); nothing was left in {self.target}"
            )

    def _verify_files(self) -> None:
        """Read every restored file back: its size, and each chunk against its id (a chunk never written, a
        write that went astray or a file that was swapped fails here, naming the file and the chunk).
        Largest files first, a few at a time (reads and BLAKE3 release the GIL)."""
        files = sorted((e for e in self.entries if e.kind == "f"), key=lambda e: -int(e.size or 0))
        local = threading.local()
        with concurrent.futures.ThreadPoolExecutor(WORKERS + 1, thread_name_prefix="rok-verify") as pool:
            for done in pool.map(lambda entry: self._verify_file(entry, local), files):
                del done

    def _verify_file(self, entry: Entry, local: threading.local) -> None:
        rel = entry.path
        buffer: bytearray | None = getattr(local, "buffer", None)
        if buffer is None:
            buffer = local.buffer = bytearray(MAX_SIZE)
        view = memoryview(buffer)
        fd = self.tree.open(rel, O_READ)
        try:
            st = os.fstat(fd)
            self._check_is_the_file(rel, entry, st)
            offset = 0
            for chunk_hex, length in entry.content or ():
                if chunk_hex is not None:
                    part = view[:length] if length <= len(view) else memoryview(bytearray(length))
                    got = os.preadv(fd, [part], offset)
                    if got != length or blake3.blake3(part).hexdigest() != chunk_hex:
                        raise CorruptData(
                            f"restored file {rel!r} does not hold chunk {chunk_hex} at offset {offset} "
                            f"(snapshot {self.snapshot_id[:12]}); nothing was left in {self.target}"
                        )
                offset += length
        finally:
            os.close(fd)

    def _finish_tree(self) -> None:
        tree = self.tree
        for entry in self.entries:
            kind, rel = entry.kind, entry.path
            if kind == "h":
                tree.link(entry.link, rel)
            elif kind == "p":
                tree.mkfifo(rel)
            elif kind in ("c", "b"):
                if not self.devices:
                    self.warnings.append(f"{rel}: device file skipped (restore with --devices to create it)")
                elif not self._as_root:
                    self.warnings.append(f"{rel}: device file skipped (restoring devices needs root)")
                else:
                    tree.mknod(rel, stat.S_IFCHR if kind == "c" else stat.S_IFBLK, entry.rdev or 0)
        for entry in self.entries:
            if entry.kind == "l":
                tree.symlink(entry.target, entry.path)
        dirs: list[Entry] = []
        others: list[Entry] = []
        for entry in self.entries:
            kind = entry.kind
            if kind == "d":
                dirs.append(entry)
            elif kind != "h" and entry.path not in self._whole and self._created(entry):
                others.append(entry)

        def apply(part: list[Entry]) -> None:
            for e in part:
                self._metadata(e)

        _in_parallel(apply, others)
        for entry in reversed(dirs):  # deepest first, after everything inside them
            self._metadata(entry)

    def _created(self, entry: Entry) -> bool:
        return entry.kind not in ("c", "b") or (self.devices and self._as_root)

    def _metadata(self, entry: Entry) -> None:
        mode, owner = self._mode_and_owner(entry)
        self.warnings += self.tree.apply(entry.path, entry.kind, mode, owner, entry.mtime_ns, entry.xattrs or {})

    def _mode_and_owner(self, entry: Entry) -> tuple[int, tuple[int, int] | None]:
        """The mode to give ``entry`` (set-uid and set-gid bits of files only when asked) and, as root, its owner."""
        mode = entry.mode
        if entry.kind != "d" and mode & _SET_ID and not self.keep_setuid:
            mode &= ~_SET_ID
            self.warnings.append(
                f"{entry.path}: set-uid/set-gid bits cleared (restore with --keep-setuid to keep them)"
            )
        return mode, (entry.uid, entry.gid) if self._as_root else None

    def verify_structure(self) -> None:
        """The staging tree holds exactly the snapshot's names, each of its type (nothing swapped or added);
        checked right before the tree is put in place."""
        children: dict[str, set[str]] = defaultdict(set)
        for entry in self.entries:
            rel = entry.path
            if rel == "." or not self._created(entry):
                continue
            parent, _, name = rel.rpartition("/")
            children[parent or "."].add(name)
            if not kind_matches(entry.kind, self.tree.kind_of(rel)):
                raise self.tree.failed("verify", rel, OSError(errno.ELOOP, "its type changed"))
        for entry in self.entries:
            if entry.kind == "d" and self.tree.names(entry.path) != children.get(entry.path, set()):
                raise self.tree.failed(
                    "verify", entry.path, OSError(errno.ELOOP, "it holds names the snapshot does not")
                )


def _in_parallel(work: Callable[[list[Entry]], object], items: list[Entry], threads: int = 4) -> None:
    if len(items) < 256:
        work(items)
        return
    step = (len(items) + threads - 1) // threads
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="rok-tree") as pool:
        for future in [pool.submit(work, items[i : i + step]) for i in range(0, len(items), step)]:
            future.result()


def pieces(
    wanted: dict[bytes, tuple[Location, Targets]],
) -> list[tuple[int, int, dict[bytes, tuple[Location, Targets]]]]:
    """A pack's wanted blobs, in offset order, as (start, end, blobs) ranges of about ``READ_PIECE`` bytes each
    (one read each): a restore holds a few pieces at once, not a few 16 MiB packs."""
    blobs = sorted(wanted.items(), key=lambda item: item[1][0].offset)
    out: list[tuple[int, int, dict[bytes, tuple[Location, Targets]]]] = []
    first = 0
    while first < len(blobs):
        start = blobs[first][1][0].offset
        end = start + blobs[first][1][0].length
        last = first + 1
        while last < len(blobs) and blobs[last][1][0].offset + blobs[last][1][0].length - start <= READ_PIECE:
            end = max(end, blobs[last][1][0].offset + blobs[last][1][0].length)
            last += 1
        out.append((start, end, dict(blobs[first:last])))
        first = last
    return out
