"""Walking the tree for a snapshot: list and stat with a few threads, then put the entries in walk order.

It fills ``entries`` (walk order) and ``listed`` (each directory's entries) and hands files that must be read
to the :class:`~rokstore.archiver.reader.FileReader`;
files the node-local cache knows unchanged (:class:`~rokstore.archiver.known.KnownFiles`) are not read.
"""

from __future__ import annotations

import concurrent.futures
import os
import stat
import threading
from pathlib import Path

from rokstore.archiver.known import KnownFiles
from rokstore.archiver.reader import BATCH, FileReader
from rokstore.archiver.tally import Tally, replaced
from rokstore.errors import StorePermanentError
from rokstore.repository.manifest import Entry
from rokstore.xattrs import read_xattrs

WALKERS = 1


class Walker:
    def __init__(
        self,
        source: Path,
        tally: Tally,
        known: KnownFiles,
        reader: FileReader,
        thread_errors: list[BaseException],
    ) -> None:
        self.source = source
        self.tally = tally
        self.known = known
        self.reader = reader
        self.thread_errors = thread_errors
        self.entries: list[Entry] = []  # walk order: depth first, names sorted within a directory
        self.listed: dict[str, tuple[list[Entry], list[str]]] = {}  # directory ("" the root) -> entries, subdirs
        self.linked: set[str] = set()  # directories holding a file with several links
        self.missed = False  # set when a file is queued for reading
        self._listed: dict[str, os.stat_result] = {}  # each directory as its parent's listing saw it, by path

    def walk(self) -> None:
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
        self._listed[""] = st
        self.tally.dirs += 1
        if st.st_ctime_ns < self.known.racy_after:
            self.known.others["."] = (st.st_mode, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        listed = self.listed
        outstanding = [1]
        done = threading.Event()
        pool = concurrent.futures.ThreadPoolExecutor(WALKERS, thread_name_prefix="rok-walk")
        lock = self.tally.lock

        def job(path: str, rel: str) -> None:
            subdirs: list[tuple[str, str]] = []
            try:
                listed[rel] = self._list_dir(path, rel, subdirs)
                with lock:
                    outstanding[0] += len(subdirs)
                for sub_path, sub_rel in subdirs:
                    pool.submit(job, sub_path, sub_rel)
            except BaseException as error:
                self.thread_errors.append(error)
            finally:
                with lock:
                    outstanding[0] -= 1
                    if outstanding[0] == 0:
                        done.set()

        try:
            pool.submit(job, root, "")
            done.wait()
        finally:
            pool.shutdown(wait=True)
        if self.thread_errors:
            raise self.thread_errors[0]
        stack = [""]
        while stack:
            rel = stack.pop()
            entries, subdirs = listed.get(rel, ([], []))
            self.entries.extend(entries)
            stack.extend(reversed(subdirs))
        # Hard links: the first name in walk order holds the content, later ones point at it.
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
                self.tally.bytes_scanned += cst.st_size
                if self._cached_or_queued(path, entry["p"], entry, cst, batch):
                    with lock:
                        self.tally.files_done += 1
            else:
                entry["t"] = "h"
                entry["h"] = first
        if batch:
            self.reader.submit(batch)

    def _cached_or_queued(
        self,
        path: str,
        rel: str,
        entry: Entry,
        cst: os.stat_result,
        batch: list[tuple[str, str, Entry, os.stat_result]],
    ) -> bool:
        """True if the cache holds the file's chunks; otherwise it is queued for the readers."""
        if self.known.unchanged(path, rel, entry, cst):
            return True
        self.missed = True
        batch.append((path, rel, entry, cst))
        if len(batch) >= BATCH:
            self.reader.submit(batch[:])
            batch.clear()
        return False

    def _list_dir(self, path: str, rel: str, subdirs: list[tuple[str, str]]) -> tuple[list[Entry], list[str]]:
        """List and stat one directory's children, relative to an open descriptor of it (no path lookups)."""
        entries: list[Entry] = []
        batch: list[tuple[str, str, Entry, os.stat_result]] = []
        files = dirs = scanned = cached = 0
        try:
            dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            self.tally.fail(rel or ".", error)
            return entries, []
        try:
            swapped = replaced(self._listed.pop(rel), os.fstat(dir_fd))  # opened by path: a parent may be a link now
            if swapped is not None:
                self.tally.fail(rel or ".", swapped)
                return entries, []
            try:
                names = sorted(os.listdir(dir_fd))
            except OSError as error:
                self.tally.fail(rel or ".", error)
                return entries, []
            prefix = f"{rel}/" if rel else ""
            lstat = os.lstat
            racy_after = self.known.racy_after
            others = self.known.others
            s_imode = stat.S_IMODE
            for name in names:
                child = prefix + name
                child_path = f"{path}/{name}"
                try:
                    cst = lstat(name, dir_fd=dir_fd)
                except OSError as error:
                    self.tally.fail(child, error)
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
                        self.linked.add(rel)
                        continue
                    scanned += cst.st_size
                    if self._cached_or_queued(child_path, child, entry, cst, batch):
                        cached += 1
                    continue
                if cst.st_ctime_ns < racy_after:
                    others[child] = (mode, cst.st_mtime_ns, cst.st_ctime_ns, cst.st_ino)
                if stat.S_ISDIR(mode):
                    entries.append(self._entry(child, child_path, cst, "d"))
                    dirs += 1
                    self._listed[child] = cst
                    subdirs.append((child_path, child))
                elif stat.S_ISLNK(mode):
                    entry = self._entry(child, child_path, cst, "l")
                    try:
                        entry["l"] = os.readlink(name, dir_fd=dir_fd)
                    except OSError as error:
                        self.tally.fail(child, error)
                        continue
                    entries.append(entry)
                elif stat.S_ISFIFO(mode):
                    entries.append(self._entry(child, child_path, cst, "p"))
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    entry = self._entry(child, child_path, cst, "c" if stat.S_ISCHR(mode) else "b")
                    entry["r"] = cst.st_rdev
                    entries.append(entry)
                else:
                    self.tally.warn(f"{child}: skipped (a socket or unknown file type)")
        finally:
            os.close(dir_fd)
        if batch:
            self.reader.submit(batch)
        tally = self.tally
        with tally.lock:
            tally.files += files
            tally.dirs += dirs
            tally.bytes_scanned += scanned
            tally.files_done += cached
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
