"""The node-local files cache as one snapshot uses it: what the last snapshot knew, what this one learns.

A directory whose listing (the stat record of each entry, packed, see :mod:`rokstore.repository.cache`) is the
cached one is *same*: the walker builds no entries for it, and unless something below it changed its cached tree is
this snapshot's (:meth:`KnownFiles.unchanged_dirs`). In a directory whose listing changed, a file whose signature
is the cached one is not read again: its chunks come from the cache (checked against the index unless the cache
is trusted, see :meth:`KnownFiles.load`). Only what was seen outside the racy window is vouched for next time.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Collection, Mapping

from rokstore.repository.cache import (
    CachedState,
    Child,
    Content,
    FileCache,
    Listing,
    Packed,
    pack_listing,
    unpack_listing,
)
from rokstore.repository.index import Index, Location
from rokstore.repository.manifest import Entry
from rokstore.repository.trees import deepest_first

ReadJob = tuple[str, str, Entry, os.stat_result]  # path, relative path, entry, stat
Listed = Mapping[str, tuple[list[Entry] | None, list[str]]]  # directory -> its entries (None: same), subdirs
_UNTRUSTED = -1


class KnownFiles:
    def __init__(
        self,
        cache: FileCache,
        state: CachedState,
        chunks: dict[bytes, Location],
        trusted: bool,
        content: dict[str, Content] | None,
        racy_after: int,
    ) -> None:
        self.cache = cache
        self.state = state
        self.trusted = trusted
        self.racy_after = racy_after
        self._chunks = chunks
        self._content = content  # only when the cache is not trusted: each reused chunk is looked up
        self._by_name: dict[str, dict[str, Child]] = {}  # cached listings of changed directories, by entry name
        self.read: dict[str, Content] = {}  # content of the files read by this snapshot (outside the racy window)
        self.hits: list[ReadJob] = []  # files of changed directories whose cached content is reused
        self.same: set[str] = set()  # directories whose listing is the cached one
        self.same_files = 0  # regular files in them
        self.listings: dict[str, Listing] = {}  # listings of the other directories, as walked
        self.linked: set[str] = set()  # directories holding a file with several links

    @classmethod
    async def load(cls, cache: FileCache, index: Index, racy_after: int) -> KnownFiles:
        state = await asyncio.to_thread(cache.load)
        # While the index files the cache was saved against all still exist (gc rewrites them), every
        # chunk the cache names is still stored: no need to look each one up.
        trusted = bool(state.index) and state.index <= index.files.keys()
        content = None if trusted else await asyncio.to_thread(state.content)
        return cls(cache, state, index.chunks, trusted, content, racy_after)

    def may_be_same(self, rel: str) -> bool:
        """True if directory ``rel`` has a cached listing its tree may be reused for (worth comparing)."""
        return self.trusted and rel in self.state.reusable

    def is_same(self, rel: str, signature: Packed, files: int) -> bool:
        """True if directory ``rel``'s listing, packed (``signature``, holding ``files`` regular files), is the
        cached one: it is then *same* (no entries are built)."""
        if self.may_be_same(rel) and self.state.listings.get(rel) == signature:
            self.same.add(rel)
            self.same_files += files
            return True
        return False

    def not_same(self, rel: str, files: int, listing: Listing) -> None:
        """Directory ``rel``, found same, changed before its entries were built: it has ``listing`` now."""
        self.same.discard(rel)
        self.same_files -= files
        self.listings[rel] = listing

    def walked(self, rel: str, listing: Listing) -> None:
        """Directory ``rel``, not same, had ``listing`` (in name order): saved for the next snapshot."""
        self.listings[rel] = listing

    def unchanged(self, path: str, rel: str, entry: Entry, cst: os.stat_result) -> bool:
        """True if the cache holds the file's chunks (the file is then a hit); otherwise it must be read."""
        directory, _, name = rel.rpartition("/")
        by_name = self._by_name.get(directory)
        if by_name is None:
            by_name = self._by_name[directory] = {
                c[0]: c for c in unpack_listing(self.state.listings.get(directory, b""))
            }
        cached = by_name.get(name)
        if (
            cached is not None
            and len(cached) == 6
            and cached[2] == cst.st_size
            and cached[3] == cst.st_mtime_ns
            and cached[4] == cst.st_ctime_ns
            and cached[5] == cst.st_ino
            and (self._content is None or self._chunks_stored(rel))
        ):
            # Same ctime: neither content nor xattrs changed since the cached read. The content and xattrs are
            # filled in after the walk (see fill_hits).
            entry.size = cst.st_size
            self.hits.append((path, rel, entry, cst))
            return True
        return False

    def _chunks_stored(self, rel: str) -> bool:
        assert self._content is not None
        found = self._content.get(rel)
        return found is not None and all(c is None or bytes.fromhex(c) in self._chunks for c, _ in found[0])

    def remember_read(self, rel: str, st: os.stat_result, content: list[list[object]], xattrs: dict[str, str]) -> None:
        if st.st_ctime_ns < self.racy_after:
            self.read[rel] = (content, xattrs)
        # else: changed just before the snapshot started, within the file system's timestamp granularity;
        # a write right after our read could leave (size, mtime, ctime) unchanged, so read it again next time.

    def unchanged_dirs(self, listed: Listed, failed: Collection[str]) -> dict[str, bytes]:
        """The directories (relative path, root ``""``) whose tree is the cached one, with its id.

        A directory is unchanged when it is *same* (its listing is the cached one: no name added, removed or
        renamed, every entry's mode, size, mtime, ctime and inode as they were, so neither content, owner nor
        xattrs changed), nothing in it failed, every subdirectory is unchanged, and the cached tree is still
        in the index. (A directory holding a file with several links is never reusable: those name their
        first path across directories.)
        """
        cached_trees = self.state.trees
        if not cached_trees or not self.same:
            return {}
        failed_in = {path.rpartition("/")[0] for path in failed if path != "."}  # a failed entry is in no listing
        unchanged: dict[str, bytes] = {}
        for rel in deepest_first(self.same):
            tree = cached_trees.get(rel)
            if tree is None or (rel or ".") in failed or rel in failed_in:
                continue
            if all(sub in unchanged for sub in listed[rel][1]):
                tree_id = bytes.fromhex(tree)
                if tree_id in self._chunks:
                    unchanged[rel] = tree_id
        return unchanged

    def fill_hits(self, read: Callable[[str, str, Entry, os.stat_result], None], skip: Collection[str]) -> None:
        """Give the unchanged files their cached content, except in the directories ``skip`` (whose cached tree
        is reused); ``read`` those the (damaged) cache lacks after all."""
        wanted = [hit for hit in self.hits if hit[1].rpartition("/")[0] not in skip]
        if not wanted:
            return
        content = self.state.content_in({rel.rpartition("/")[0] for _, rel, _, _ in wanted})
        missing: set[str] = set()
        for path, rel, entry, st in wanted:
            found = content.get(rel)
            if found is None:  # damaged cache: read the file after all
                missing.add(rel)
                read(path, rel, entry, st)
                continue
            entry.content = found[0]
            if found[1]:
                entry.xattrs = found[1]
        if missing:
            self.hits = [hit for hit in self.hits if hit[1] not in missing]

    def save_later(self, index_files: list[str], trees: dict[str, str], failed: Collection[str]) -> None:
        """Write what this snapshot knows for the next one, in the background (see ``FileCache.save_later``)."""
        state, racy_after = self.state, self.racy_after
        known = {rel for _, rel, _, _ in self.hits} | self.read.keys()
        read, same, listings, linked, reused = self.read, self.same, self.listings, self.linked, self.same_files
        failed = set(failed)

        def vouched(directory: str, listing: Listing) -> Listing:
            prefix = f"{directory}/" if directory else ""
            out: list[Child] = []
            for child in listing:
                rel = prefix + child[0]
                ok = rel in known if stat.S_ISREG(child[1]) else child[4] < racy_after and rel not in failed
                out.append(child if ok else (child[0], _UNTRUSTED))
            return tuple(out)

        def make() -> CachedState:
            new: dict[str, Packed] = {}
            for rel in trees:
                if rel in same:
                    new[rel] = state.listings[rel]
                elif rel in listings:
                    new[rel] = pack_listing(vouched(rel, listings[rel]))
            reusable = frozenset(
                rel for rel in new if rel not in linked and rel not in failed and (rel or ".") not in failed
            )

            def live() -> list[str]:
                return [
                    f"{rel}/{c[0]}" if rel else c[0]
                    for rel, packed in new.items()
                    for c in unpack_listing(packed)
                    if len(c) == 6 and stat.S_ISREG(c[1])
                ]

            parts = state.parts_with(read, reused + len(known) - len(read), live)
            return CachedState(new, reusable, frozenset(index_files), trees, parts)

        self.cache.save_later(make)

    def release(self) -> None:
        self.hits = []
        self.read = {}
        self.listings = {}
        self._by_name = {}
        self.state = CachedState()
        self._content = None
