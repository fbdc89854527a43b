"""Walking the tree for a snapshot: list and stat with a few threads, then put the entries in manifest order.

Part of :class:`rokstore.archiver.archiver.Archiver` (a mixin, to keep that module readable): it fills
``self.entries`` and hands files that must be read to the readers' queue; unchanged files take their chunks
from the node-local cache instead.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import stat
import threading
from typing import Any

from rokstore.errors import StorePermanentError
from rokstore.repository.cache import Content, Signature
from rokstore.repository.manifest import Entry
from rokstore.xattrs import read_xattrs

WALKERS = 1
ReadJob = tuple[str, str, Entry, os.stat_result]  # path, relative path, entry, stat


class Walker:
    # Provided by Archiver.
    source: Any
    entries: list[Entry]
    warnings: list[str]
    new_files: dict[str, Signature]
    new_others: dict[str, Signature]
    hits: list[tuple[str, str, Entry, os.stat_result]]
    _racy_after: int
    _missed: bool
    index_chunks: dict[bytes, Any]
    files: int
    dirs: int
    bytes_scanned: int
    files_done: int
    _lock: threading.Lock
    _queue: queue.Queue[list[ReadJob] | None]
    _thread_errors: list[BaseException]
    _cache_trusted: bool

    def _fail(self, rel: str, error: OSError) -> None:
        raise NotImplementedError

    def _walk(self, previous: dict[str, Signature], content: dict[str, Content] | None) -> None:
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
        if st.st_ctime_ns < self._racy_after:
            self.new_others["."] = (st.st_mode, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        self._previous = previous
        self._content = content  # only when the cache is not trusted: each reused chunk is looked up
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
                if self._cached_or_queued(path, entry["p"], entry, cst, batch):
                    with self._lock:
                        self.files_done += 1
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
    ) -> bool:
        """True if the cache holds the file's chunks; otherwise it is queued for the readers."""
        cached = self._previous.get(rel)
        if (
            cached is not None
            and cached[0] == cst.st_size
            and cached[1] == cst.st_mtime_ns
            and cached[2] == cst.st_ctime_ns
            and cached[3] == cst.st_ino
            and (self._content is None or self._chunks_stored(rel))
        ):
            # Same ctime: neither content nor xattrs changed since the cached read. The content ("c", "x") is
            # filled in after the walk, and only if the cached manifest cannot be reused (see Archiver).
            entry["s"] = cst.st_size
            self.new_files[rel] = cached
            self.hits.append((path, rel, entry, cst))
            return True
        self._missed = True
        batch.append((path, rel, entry, cst))
        if len(batch) >= 64:
            self._queue.put(batch[:])
            batch.clear()
        return False

    def _chunks_stored(self, rel: str) -> bool:
        assert self._content is not None
        found = self._content.get(rel)
        return found is not None and all(c is None or bytes.fromhex(c) in self.index_chunks for c, _ in found[0])

    def _list_dir(self, path: str, rel: str, subdirs: list[tuple[str, str]]) -> tuple[list[Entry], list[str]]:
        """List and stat one directory's children, relative to an open descriptor of it (no path lookups)."""
        entries: list[Entry] = []
        batch: list[tuple[str, str, Entry, os.stat_result]] = []
        files = dirs = scanned = cached = 0
        try:
            dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            self._fail(rel or ".", error)
            return entries, []
        try:
            try:
                names = sorted(os.listdir(dir_fd))
            except OSError as error:
                self._fail(rel or ".", error)
                return entries, []
            prefix = f"{rel}/" if rel else ""
            lstat = os.lstat
            s_imode = stat.S_IMODE
            for name in names:
                child = prefix + name
                child_path = f"{path}/{name}"
                try:
                    cst = lstat(name, dir_fd=dir_fd)
                except OSError as error:
                    self._fail(child, error)
                    continue
                mode = cst.st_mode
                if stat.S_ISREG(mode):
                    files += 1
                    entry: Entry = {
                        "p": child,
                        "t": "f",
                        "m": s_imode(mode),
                        "u": cst.st_uid,
                        "g": cst.st_gid,
                        "mt": cst.st_mtime_ns,
                    }
                    entries.append(entry)
                    if cst.st_nlink > 1:
                        # decided once all names are known and in order (see _walk)
                        entry["_link"] = ((cst.st_dev, cst.st_ino), child_path, cst)
                        continue
                    scanned += cst.st_size
                    if self._cached_or_queued(child_path, child, entry, cst, batch):
                        cached += 1
                    continue
                if cst.st_ctime_ns < self._racy_after:
                    self.new_others[child] = (mode, cst.st_mtime_ns, cst.st_ctime_ns, cst.st_ino)
                if stat.S_ISDIR(mode):
                    entries.append(self._entry(child, child_path, cst, "d"))
                    dirs += 1
                    subdirs.append((child_path, child))
                elif stat.S_ISLNK(mode):
                    entry = self._entry(child, child_path, cst, "l")
                    try:
                        entry["l"] = os.readlink(name, dir_fd=dir_fd)
                    except OSError as error:
                        self._fail(child, error)
                        continue
                    entries.append(entry)
                elif stat.S_ISFIFO(mode):
                    entries.append(self._entry(child, child_path, cst, "p"))
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    entry = self._entry(child, child_path, cst, "c" if stat.S_ISCHR(mode) else "b")
                    entry["r"] = cst.st_rdev
                    entries.append(entry)
                else:
                    with self._lock:
                        self.warnings.append(f"{child}: skipped (a socket or unknown file type)")
        finally:
            os.close(dir_fd)
        if batch:
            self._queue.put(batch)
        with self._lock:
            self.files += files
            self.dirs += dirs
            self.bytes_scanned += scanned
            self.files_done += cached
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
