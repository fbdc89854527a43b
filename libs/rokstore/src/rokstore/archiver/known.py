"""The node-local files cache as one snapshot uses it: what the last snapshot knew, what this one learns.

A file whose stat signature is the cached one is not read again: its chunks come from the cache (checked
against the index unless the cache is trusted, see :meth:`KnownFiles.load`); a directory whose entries all
match is its cached tree again (:meth:`KnownFiles.unchanged_dirs`). Only what was seen outside the racy window
is remembered for next time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Collection, Mapping

from rokstore.repository.cache import CachedState, Content, FileCache, Signature
from rokstore.repository.index import Index, Location
from rokstore.repository.manifest import Entry
from rokstore.repository.trees import deepest_first

ReadJob = tuple[str, str, Entry, os.stat_result]  # path, relative path, entry, stat


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
        self._previous = state.files
        self._content = content  # only when the cache is not trusted: each reused chunk is looked up
        self.files: dict[str, Signature] = {}  # stat signatures of the files whose content is known
        self.read: dict[str, Content] = {}  # content of the files read by this snapshot
        self.others: dict[str, Signature] = {}  # signatures of the other entries (directories, symlinks, ...)
        self.hits: list[ReadJob] = []  # files whose cached content is reused

    @classmethod
    async def load(cls, cache: FileCache, index: Index, racy_after: int) -> KnownFiles:
        state = await asyncio.to_thread(cache.load)
        # While the index files the cache was saved against all still exist (gc rewrites them), every
        # chunk the cache names is still stored: no need to look each one up.
        trusted = bool(state.index) and state.index <= index.files.keys()
        content = None if trusted else await asyncio.to_thread(state.content)
        return cls(cache, state, index.chunks, trusted, content, racy_after)

    def unchanged(self, path: str, rel: str, entry: Entry, cst: os.stat_result) -> bool:
        """True if the cache holds the file's chunks (the file is then a hit); otherwise it must be read."""
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
            # filled in after the walk, and only if its directory's cached tree cannot be reused (see fill_hits).
            entry["s"] = cst.st_size
            self.files[rel] = cached
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
            self.files[rel] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        # else: changed just before the snapshot started, within the file system's timestamp granularity;
        # a write right after our read could leave (size, mtime, ctime) unchanged, so read it again next time.

    def unchanged_dirs(
        self, listed: Mapping[str, tuple[list[Entry], list[str]]], linked: Collection[str], failed: Collection[str]
    ) -> dict[str, bytes]:
        """The directories (relative path, root ``""``) whose tree is the cached one, with its id.

        A directory is unchanged when its own signature is the cached one (its mtime changes when a name is
        added, removed or renamed in it; its ctime when its mode, owner or xattrs change), every file in it is a
        hit, every other entry in it has its cached signature, it holds no file with several links (those name
        their first path across directories), nothing in it failed, every subdirectory is unchanged, and the
        cached tree is still in the index.
        """
        cached_trees, cached_others, others = self.state.trees, self.state.others, self.others
        if not cached_trees:
            return {}
        hits = {rel for _, rel, _, _ in self.hits}
        failed_in = {path.rpartition("/")[0] for path in failed if path != "."}  # a failed entry is in no listing

        def same(entry: Entry) -> bool:
            kind, path = entry["t"], entry["p"]
            if kind == "f":
                return path in hits
            if kind == "d":
                return True  # judged on its own, before its parent
            signature = others.get(path)
            return signature is not None and signature == cached_others.get(path)

        unchanged: dict[str, bytes] = {}
        for rel in deepest_first(listed):
            tree = cached_trees.get(rel)
            key = rel or "."
            signature = others.get(key)
            if tree is None or signature is None or signature != cached_others.get(key):
                continue
            entries, subdirs = listed[rel]
            if rel in linked or key in failed or rel in failed_in or not all(sub in unchanged for sub in subdirs):
                continue
            if all(same(e) for e in entries):
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
        for path, rel, entry, st in wanted:
            found = content.get(rel)
            if found is None:  # damaged cache: read the file after all
                del self.files[rel]
                read(path, rel, entry, st)
                continue
            entry["c"] = found[0]
            if found[1]:
                entry["x"] = found[1]

    def save(self, index_files: list[str], trees: dict[str, str]) -> None:
        content = self.state.parts_with(self.read, [rel for _, rel, _, _ in self.hits])
        self.cache.save(self.files, content, self.others, index_files, trees)

    def release(self) -> None:
        self.hits = []
        self.files = {}
        self.read = {}
        self.others = {}
        self.state = CachedState()
        self._previous = {}
        self._content = None
