"""Walking the tree for a snapshot: list and stat with a few threads, then put the entries in walk order.

It fills ``entries`` (walk order) and ``listed`` (each directory's entries) and hands files that must be read
to the :class:`~rokstore.archiver.reader.FileReader`;
files the node-local cache knows unchanged (:class:`~rokstore.archiver.known.KnownFiles`) are not read.
A directory whose listing is the cached one costs a stat per entry and one comparison of bytes: with the
:mod:`rokscan` extension the listing, the stats and the packed signature are made in C without the GIL and
without a Python object per entry (without it, the same signature is packed in Python from ``os.lstat``). No
entries are built for such a directory, unless something below it changed and its tree must be encoded again
(:meth:`Walker.materialize`, which stats its children again).
"""

from __future__ import annotations

import collections
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from rokstore.archiver.known import KnownFiles
from rokstore.archiver.reader import BATCH, FileReader
from rokstore.archiver.tally import Tally, replaced
from rokstore.errors import StorePermanentError
from rokstore.repository.cache import Listing, pack_listing
from rokstore.repository.manifest import Entry, Kind
from rokstore.xattrs import read_xattrs

try:
    from rokscan import scan
except ImportError:  # not built here: the same signature is packed in Python
    scan = None  # type: ignore[assignment]

Stats = list[tuple[str, os.stat_result]]  # a directory's children and their lstat, in name order
Scanned = tuple[bytes, int, int, list[tuple[str, int, int]], list[tuple[str, int]]]  # what rokscan.scan answers
# A directory scanned ahead: its fstat and the scan or why that failed; or why it could not be opened.
Early = tuple[os.stat_result, Scanned | OSError] | OSError
_TAKEN = object()  # a directory the walk scans itself: the scan-ahead leaves it
_FAILED = object()  # a directory the scan-ahead could not scan for a reason of its own: the walk scans it itself


class Identity(NamedTuple):
    """A subdirectory as a scan saw it: what :func:`~rokstore.archiver.tally.replaced` compares."""

    st_dev: int
    st_ino: int


class Walker:
    def __init__(
        self,
        source: Path,
        tally: Tally,
        known: KnownFiles,
        reader: FileReader,
    ) -> None:
        self.source = source
        self.tally = tally
        self.known = known
        self.reader = reader
        self.entries: list[Entry] = []  # walk order: depth first, names sorted within a directory
        # directory ("" the root) -> its entries (None while it is same as cached), its subdirectories
        self.listed: dict[str, tuple[list[Entry] | None, list[str]]] = {}
        self._listed: dict[str, os.stat_result | Identity] = {}  # each directory as its parent's listing saw it
        # same directories: path, identity, the walk's stats (None: scanned in C), signature, regular files
        self._same: dict[str, tuple[str, os.stat_result | Identity, Stats | None, bytes, int]] = {}
        self.scan = scan  # None: the Python path
        # files with several links, by relative path: (device, inode), path, stat (see walk)
        self._linked: dict[str, tuple[tuple[int, int], str, os.stat_result]] = {}
        self._ahead: _ScanAhead | None = None  # while walking, when same directories are likely

    def walk(self) -> None:
        """List the tree on this thread (with :class:`_ScanAhead`), then put the entries in order.

        Each directory in turn is listed and its children stat'ed (a directory whose listing is the cached one
        builds no entries), and files that must be read are queued for the readers; the entries are then
        concatenated depth first in name order, so each directory precedes what it holds.
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
        listed = self.listed
        # One thread builds: each stat releases the GIL only for a few microseconds of kernel work, and the Python
        # around it holds it, so more walkers only contend (measured: one lists 28k entries fastest). Directories
        # likely the cached ones are scanned in C, without the GIL: those a second thread scans ahead.
        todo = [(root, "")]
        ahead = _ScanAhead(self.known) if self.scan is not None and self.known.trusted else None
        self._ahead = ahead
        try:
            while todo:
                path, rel = todo.pop()
                found: list[tuple[str, str]] = []
                listed[rel] = self._list_dir(path, rel, found)
                todo.extend(found)
                if ahead is not None:
                    ahead.offer(found)
        finally:
            self._ahead = None
            if ahead is not None:
                ahead.stop()
        stack = [""]
        while stack:
            rel = stack.pop()
            entries, subdirs = listed.get(rel, ([], []))
            if entries is not None:
                self.entries.extend(entries)
            stack.extend(reversed(subdirs))
        # Hard links: the first name in walk order holds the content, later ones point at it.
        links: dict[tuple[int, int], str] = {}
        batch: list[tuple[str, str, Entry, os.stat_result]] = []
        linked, self._linked = self._linked, {}
        for entry in self.entries if linked else ():
            link = linked.pop(entry.path, None)
            if link is None:
                continue
            identity, path, cst = link
            first = links.get(identity)
            if first is None:
                links[identity] = entry.path
                self.tally.bytes_scanned += cst.st_size
                if self._cached_or_queued(path, entry.path, entry, cst, batch):
                    with self.tally.lock:
                        self.tally.files_done += 1
            else:
                entry.kind = "h"
                entry.link = first
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
        batch.append((path, rel, entry, cst))
        if len(batch) >= BATCH:
            self.reader.submit(batch[:])
            batch.clear()
        return False

    def _list_dir(self, path: str, rel: str, subdirs: list[tuple[str, str]]) -> tuple[list[Entry] | None, list[str]]:
        """List and stat one directory's children, relative to an open descriptor of it (no path lookups)."""
        listed = self._listed.pop(rel)
        known = self.known
        candidate = known.may_be_same(rel)
        early = self._ahead.take(rel) if candidate and self._ahead is not None else None
        if early is not None:  # scanned ahead: the checks _open and the scan below make, on what it saw
            result = _usable(early, listed)
            if isinstance(result, OSError):
                self.tally.fail(rel or ".", result)
                return [], []
            same = self._if_same(path, rel, listed, result, subdirs)
            if same is not None:
                return same
            candidate = False  # changed: listed again below, with the stats its entries need
        dir_fd = self._open(path, rel, listed)
        if dir_fd is None:
            return [], []
        try:
            prefix = f"{rel}/" if rel else ""
            if candidate and self.scan is not None:
                try:
                    scanned_now = self.scan(dir_fd)
                except OSError as error:
                    self.tally.fail(rel or ".", error)
                    return [], []
                same = self._if_same(path, rel, listed, scanned_now, subdirs)
                if same is not None:
                    return same
                candidate = False  # changed: listed again below, with the stats its entries need
            stats = self._stat_children(dir_fd, rel, prefix)
            if stats is None:
                return [], []
            listing = _listing(stats)
            if candidate:
                files = scanned = 0
                subs = []
                for name, cst in stats:
                    if stat.S_ISREG(cst.st_mode):
                        files += 1
                        scanned += cst.st_size
                    elif stat.S_ISDIR(cst.st_mode):
                        subs.append((name, cst.st_dev, cst.st_ino))
                signature = pack_listing(listing)
                if known.is_same(rel, signature, files):
                    self._same[rel] = (path, listed, stats, signature, files)
                    return None, self._count_same(path, prefix, files, scanned, subs, subdirs)
            known.walked(rel, listing)
            entries = self._entries(path, rel, dir_fd, stats, subdirs)
        finally:
            os.close(dir_fd)
        return entries, [sub_rel for _, sub_rel in subdirs]

    def _if_same(
        self, path: str, rel: str, listed: os.stat_result | Identity, result: Scanned, subdirs: list[tuple[str, str]]
    ) -> tuple[None, list[str]] | None:
        """A directory scanned in C whose listing is the cached one is *same*: counted, its subdirectories queued,
        no entries built. None if its listing is not the cached one."""
        signature, files, scanned, subs, failures = result
        if not self.known.is_same(rel, signature, files):
            return None
        prefix = f"{rel}/" if rel else ""
        for name, code in failures:
            self.tally.fail(prefix + name, OSError(code, os.strerror(code)))
        self._same[rel] = (path, listed, None, signature, files)
        subs.sort()  # in name order, as the entries are
        return None, self._count_same(path, prefix, files, scanned, subs, subdirs)

    def _open(self, path: str, rel: str, listed: os.stat_result | Identity) -> int | None:
        """A descriptor of directory ``rel``, opened by ``path`` and checked to be the one its parent's listing saw
        (a parent may be a link now); None, and the failure recorded, if it is not or cannot be opened."""
        try:
            dir_fd = _open_dir(path)
        except OSError as error:
            self.tally.fail(rel or ".", error)
            return None
        swapped = replaced(listed, os.fstat(dir_fd))
        if swapped is not None:
            os.close(dir_fd)
            self.tally.fail(rel or ".", swapped)
            return None
        return dir_fd

    def _stat_children(self, dir_fd: int, rel: str, prefix: str) -> Stats | None:
        """The children of the directory open as ``dir_fd`` and their lstat, in name order (None: it cannot be
        listed); a child that cannot be stat'ed is recorded as failed and left out."""
        try:
            names = sorted(os.listdir(dir_fd))
        except OSError as error:
            self.tally.fail(rel or ".", error)
            return None
        lstat = os.lstat
        try:
            return [(name, lstat(name, dir_fd=dir_fd)) for name in names]
        except OSError:  # one is gone (or cannot be read) since the listing: stat them one by one
            stats = []
            for name in names:
                try:
                    stats.append((name, lstat(name, dir_fd=dir_fd)))
                except OSError as error:
                    if prefix + name not in self.tally.failed:  # a materialized directory's scan may have said so
                        self.tally.fail(prefix + name, error)
            return stats

    def _count_same(
        self,
        path: str,
        prefix: str,
        files: int,
        scanned: int,
        subs: list[tuple[str, int, int]],
        subdirs: list[tuple[str, str]],
    ) -> list[str]:
        """Count a same directory's entries (every file in it is known: ``files`` regular files of ``scanned``
        bytes) and queue its subdirectories ``subs`` (name, device, inode)."""
        for name, dev, ino in subs:
            child = prefix + name
            self._listed[child] = Identity(dev, ino)
            subdirs.append((f"{path}/{name}", child))
        tally = self.tally
        with tally.lock:
            tally.files += files
            tally.dirs += len(subs)
            tally.bytes_scanned += scanned
            tally.files_done += files
        return [sub_rel for _, sub_rel in subdirs]

    def materialize(self, skip: Mapping[str, bytes]) -> None:
        """Build the entries of the same directories whose tree is not reused (something below them changed),
        from the stats of the walk, or stats taken again where the scan made none; their files are all known
        (one changed since the scan is read: its stat is not the cached one, and the directory is then not same)."""
        for rel, (path, listed, stats, signature, files) in self._same.items():
            if rel in skip:
                continue
            subdirs = self.listed[rel][1]
            dir_fd = self._open(path, rel, listed)
            if dir_fd is None:
                continue
            try:
                if stats is None:
                    stats = self._stat_children(dir_fd, rel, f"{rel}/" if rel else "")
                    if stats is None:
                        continue
                    listing = _listing(stats)
                    if pack_listing(listing) != signature:  # changed since the scan: saved as walked now
                        self.known.not_same(rel, files, listing)
                entries = self._entries(path, rel, dir_fd, stats, None)
            finally:
                os.close(dir_fd)
            self.listed[rel] = (entries, subdirs)
        self._same = {}

    def _entries(
        self,
        path: str,
        rel: str,
        dir_fd: int,
        stats: list[tuple[str, os.stat_result]],
        subdirs: list[tuple[str, str]] | None,
    ) -> list[Entry]:
        """The entries of one directory from the stats of its children; files not known are queued for reading,
        subdirectories added to ``subdirs`` (None: the walk has them already)."""
        entries: list[Entry] = []
        batch: list[tuple[str, str, Entry, os.stat_result]] = []
        files = dirs = scanned = cached = 0
        prefix = f"{rel}/" if rel else ""
        s_imode = stat.S_IMODE
        for name, cst in stats:
            child = prefix + name
            child_path = f"{path}/{name}"
            mode = cst.st_mode
            if stat.S_ISREG(mode):
                files += 1
                entry = Entry(child, "f", s_imode(mode), cst.st_uid, cst.st_gid, cst.st_mtime_ns)
                entries.append(entry)
                if cst.st_nlink > 1:
                    # decided once all names are known and in order (see walk)
                    self._linked[child] = ((cst.st_dev, cst.st_ino), child_path, cst)
                    self.known.linked.add(rel)
                    continue
                scanned += cst.st_size
                if self._cached_or_queued(child_path, child, entry, cst, batch):
                    cached += 1
                continue
            if stat.S_ISDIR(mode):
                entries.append(self._entry(child, child_path, cst, "d"))
                dirs += 1
                if subdirs is not None:
                    self._listed[child] = cst
                    subdirs.append((child_path, child))
            elif stat.S_ISLNK(mode):
                entry = self._entry(child, child_path, cst, "l")
                try:
                    entry.target = os.readlink(name, dir_fd=dir_fd)
                except OSError as error:
                    self.tally.fail(child, error)
                    continue
                entries.append(entry)
            elif stat.S_ISFIFO(mode):
                entries.append(self._entry(child, child_path, cst, "p"))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                entry = self._entry(child, child_path, cst, "c" if stat.S_ISCHR(mode) else "b")
                entry.rdev = cst.st_rdev
                entries.append(entry)
            else:
                self.tally.warn(f"{child}: skipped (a socket or unknown file type)")
        if batch:
            self.reader.submit(batch)
        if subdirs is not None:  # a materialized directory was counted by the walk
            tally = self.tally
            with tally.lock:
                tally.files += files
                tally.dirs += dirs
                tally.bytes_scanned += scanned
                tally.files_done += cached
        return entries

    def _entry(self, rel: str, path: str, st: os.stat_result, kind: Kind, xattrs: bool = True) -> Entry:
        entry = Entry(rel, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
        if xattrs:
            found = read_xattrs(path)
            if found:
                entry.xattrs = found
        return entry


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


class _ScanAhead:
    """A second thread that scans, with :func:`rokscan.scan`, directories the walk will come to later and whose
    listing is likely the cached one, and goes on below them. The scan runs in C without the GIL, so two go at
    once; the walk checks each result (the directory is still the one its parent's listing saw) and uses it as
    its own.

    The walk takes directories newest first (depth first), this thread oldest first (breadth first), so they meet
    rarely; a directory either one takes is the other's no more (:meth:`take` waits for one being scanned).
    """

    def __init__(self, known: KnownFiles) -> None:
        self._known = known
        self._queue: collections.deque[tuple[str, str]] = collections.deque()
        self._done: dict[str, object] = {}  # rel -> _TAKEN, None (being scanned), _FAILED or its Early
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="rok-scan-ahead", daemon=True)
        self._thread.start()

    def offer(self, dirs: list[tuple[str, str]]) -> None:
        """Directories (path, rel) the walk found: those likely the cached ones are worth scanning ahead."""
        likely = [(path, rel) for path, rel in dirs if self._known.may_be_same(rel)]
        if likely:
            with self._changed:
                self._queue.extend(likely)
                self._changed.notify()

    def take(self, rel: str) -> Early | None:
        """The early scan of ``rel``, waited for if under way; None if there is none (the walk scans it)."""
        with self._changed:
            if rel not in self._done:
                self._done[rel] = _TAKEN
                return None
            while self._done[rel] is None:
                self._changed.wait()
            early, self._done[rel] = self._done[rel], _TAKEN
            return None if early is _FAILED else early  # type: ignore[return-value]

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                path, rel = self._queue.popleft()
                if rel in self._done:
                    continue
                self._done[rel] = None
            self._scan(path, rel)

    def _scan(self, path: str, rel: str) -> None:
        """Scan one directory (marked as being scanned), keep what the walk will take, offer what is below it."""
        try:
            early: object = _scan_early(path)
        except Exception:  # not an OSError: the walk scans it itself and meets the error where it belongs
            early = _FAILED
        below: list[tuple[str, str]] = []
        if isinstance(early, tuple) and not isinstance(early[1], OSError):
            prefix = f"{rel}/" if rel else ""
            below = [(f"{path}/{name}", prefix + name) for name, _, _ in early[1][3]]
        with self._changed:
            self._done[rel] = early
            self._changed.notify_all()
        self.offer(below)


def _usable(early: Early, listed: os.stat_result | Identity) -> Scanned | OSError:
    """An early scan, if it is of the directory its parent's listing saw and it did not fail; else why not."""
    if isinstance(early, OSError):
        return early
    st, result = early
    return replaced(listed, st) or result


def _scan_early(path: str) -> Early:
    """The directory at ``path``, fstat'ed and scanned as the walk would; an OSError is the walk's to record."""
    try:
        dir_fd = _open_dir(path)
    except OSError as error:
        return error
    try:
        st = os.fstat(dir_fd)
        try:
            result: Scanned | OSError = scan(dir_fd)
        except OSError as error:
            result = error
    except OSError as error:
        return error
    finally:
        os.close(dir_fd)
    return st, result


def _listing(stats: Stats) -> Listing:
    """A directory's listing signature as the cache keeps it: each child's name, mode, size, times and inode."""
    return tuple([(n, s.st_mode, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for n, s in stats])
