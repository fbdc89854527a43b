"""``browse``: look inside a snapshot without restoring it: one path's entry, a directory's entries, a file's bytes.

A path is found by walking tree objects from the snapshot's root: only the trees on the path are read (each
checked against its id, and remembered by the repository), never the whole snapshot. A file's bytes come from the
chunks that cover the range asked for, each checked against its BLAKE3 id before it is returned
(``Repository.read_blobs``); a hole of a sparse file reads as zeros and is never fetched. Chunks are kept in a
bounded cache (:class:`ChunkCache`), shared by every view of one process, and a read that reaches the end of its
chunks starts fetching the next ones in the background, so that reading a file from start to end waits for the
store about once per read-ahead window instead of once per chunk. A hard link (``h``) reads as the file it names.

Use::

    view = await SnapshotView.open(repo, snapshot_id)
    for node in await view.listdir("sub"):
        print(node.name, node.kind, node.size)
    head = await view.read(await view.lookup("sub/model.json"), 0, 4096)
"""

from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from rokcommon.errors import InvalidRequest, NotFound

from rokstore.errors import CorruptData, StorePermanentError
from rokstore.repository import Repository
from rokstore.repository.manifest import Entry, SnapshotRecord
from rokstore.repository.trees import MAX_DEPTH

CACHE_BYTES = 64 << 20  # chunks kept in memory, in all
READ_AHEAD = 8 << 20  # bytes fetched beyond a read that reaches the end of its chunks
TREE_INDEXES = 4096  # directories whose name → entry tables a view keeps
LAYOUTS = 1024  # files whose chunk offsets a view keeps


class PathNotFound(StorePermanentError, NotFound):
    """No entry at that path in the snapshot."""


class NotADirectory(StorePermanentError, InvalidRequest):
    """A path that names a file (or a symlink, …) where a directory was meant."""


class NotAFile(StorePermanentError, InvalidRequest):
    """A path that names a directory (or a symlink, …) where a regular file was meant."""


@dataclass(frozen=True)
class Node:
    """One entry of a snapshot, as a browser or a file system shows it. ``path`` is ``""`` for the root."""

    path: str
    kind: str  # d f h l p c b (docs/format.md)
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    target: str | None = None  # a symlink's target, as stored
    link: str | None = None  # a hard link's first path (that file's content and metadata are this one's)
    rdev: int = 0
    tree: bytes | None = None  # a directory's tree id
    chunks: tuple[tuple[str | None, int], ...] = field(default=(), repr=False)  # (chunk id hex | None, length)
    xattrs: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @classmethod
    def of(cls, path: str, entry: Entry) -> Node:
        """The node of ``entry`` (decoded, so its fields have their types) at ``path``."""
        kind = entry.kind
        file = kind == "f"
        return cls(
            path=path,
            kind=kind,
            mode=entry.mode,
            uid=entry.uid,
            gid=entry.gid,
            mtime_ns=entry.mtime_ns,
            size=(entry.size or 0) if file else 0,
            target=entry.target if kind == "l" else None,
            link=entry.link if kind == "h" else None,
            rdev=entry.rdev or 0,
            tree=bytes.fromhex(entry.tree) if kind == "d" and entry.tree is not None else None,
            chunks=tuple((c, n) for c, n in entry.content or ()) if file else (),
            xattrs=dict(entry.xattrs or {}),
        )


class ChunkCache:
    """Verified chunks by id, up to ``limit`` bytes (least recently used first out); one fetch per chunk at a time."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self._chunks: OrderedDict[bytes, bytes] = OrderedDict()
        self._fetching: dict[bytes, asyncio.Future[bytes]] = {}
        self.fetched = 0  # chunks read from the store (what tests and benchmarks look at)

    def get(self, chunk: bytes) -> bytes | None:
        data = self._chunks.get(chunk)
        if data is not None:
            self._chunks.move_to_end(chunk)
        return data

    def holds(self, chunk: bytes) -> bool:
        """Whether ``chunk`` is in the cache or being fetched."""
        return chunk in self._chunks or chunk in self._fetching

    def put(self, chunk: bytes, data: bytes) -> None:
        if chunk in self._chunks or len(data) > self.limit:
            return
        self._chunks[chunk] = data
        self.size += len(data)
        while self.size > self.limit:
            _, dropped = self._chunks.popitem(last=False)
            self.size -= len(dropped)

    async def fetch(self, repo: Repository, chunks: Iterable[bytes], what: str) -> dict[bytes, bytes]:
        """``chunks`` from the cache, from a fetch under way, or read (and verified) now, in one batch."""
        out: dict[bytes, bytes] = {}
        waiting: dict[bytes, asyncio.Future[bytes]] = {}
        wanted: list[bytes] = []
        for chunk in dict.fromkeys(chunks):
            data = self.get(chunk)
            if data is not None:
                out[chunk] = data
            elif chunk in self._fetching:
                waiting[chunk] = self._fetching[chunk]
            else:
                wanted.append(chunk)
        if wanted:
            loop = asyncio.get_running_loop()
            mine = {c: loop.create_future() for c in wanted}
            self._fetching.update(mine)
            try:
                read = await repo.read_blobs(wanted, what)
            except BaseException as error:
                for future in mine.values():
                    future.set_exception(error)
                    future.exception()  # retrieved: a waiter that gave up leaves no warning behind
                raise
            finally:
                for chunk in wanted:
                    self._fetching.pop(chunk, None)
            self.fetched += len(read)
            for chunk, data in read.items():
                self.put(chunk, data)
                mine[chunk].set_result(data)
            out.update(read)
        for chunk, future in waiting.items():
            out[chunk] = await asyncio.shield(future)
        return out


class SnapshotView:
    """One snapshot of ``repo``, looked into path by path (see the module's docstring)."""

    def __init__(self, repo: Repository, snapshot_id: str, record: SnapshotRecord, cache: ChunkCache) -> None:
        self.repo = repo
        self.snapshot_id = snapshot_id
        self.record = record
        self.cache = cache
        self.root = replace(Node.of("", record.root), tree=bytes.fromhex(record.tree))
        self._indexes: OrderedDict[bytes, dict[str, Entry]] = OrderedDict()
        self._layouts: OrderedDict[tuple[str, ...], list[int]] = OrderedDict()
        self._links: dict[str, tuple[str, ...]] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(cls, repo: Repository, snapshot_id: str, cache: ChunkCache | None = None) -> SnapshotView:
        """The view of snapshot ``snapshot_id`` (an id or a unique prefix): its record is read, nothing else."""
        full_id = await repo.resolve(snapshot_id)
        return cls(repo, full_id, await repo.load_record(full_id), cache or ChunkCache())

    # --- paths ----------------------------------------------------------------------------------------------

    async def lookup(self, path: str) -> Node:
        """The entry at ``path`` (``/``-separated, relative to the snapshot's root; ``""`` is the root itself),
        reading only the trees of the directories on the way."""
        names = split_path(path)
        node = self.root
        for depth, name in enumerate(names):
            if node.kind != "d" or node.tree is None:
                raise NotADirectory(f"{'/'.join(names[:depth])!r} is not a directory in snapshot {self._short}")
            entry = (await self._index(node.tree)).get(name)
            if entry is None:
                raise PathNotFound(f"no {'/'.join(names[: depth + 1])!r} in snapshot {self._short}")
            node = Node.of("/".join(names[: depth + 1]), entry)
        return node

    async def listdir(self, path: str | Node) -> list[Node]:
        """The entries of the directory ``path``, in name order."""
        node = path if isinstance(path, Node) else await self.lookup(path)
        if node.kind != "d" or node.tree is None:
            raise NotADirectory(f"{node.path or '/'!r} is not a directory in snapshot {self._short}")
        prefix = node.path + "/" if node.path else ""
        return [Node.of(prefix + name, entry) for name, entry in (await self._index(node.tree)).items()]

    async def content(self, node: Node) -> Node:
        """The regular file whose content ``node`` has: itself, or the file a hard link names."""
        if node.kind == "h" and node.link is not None:
            first = await self.lookup(node.link)
            if first.kind != "f":
                raise CorruptData(
                    f"hard link {node.path!r} names {node.link!r}, which is not a file; run 'rok repo check'"
                )
            return first
        if node.kind != "f":
            raise NotAFile(f"{node.path or '/'!r} is not a regular file in snapshot {self._short}")
        return node

    async def hard_links(self) -> dict[str, tuple[str, ...]]:
        """Every file that has hard links in this snapshot → the paths of its later names. This reads every tree
        of the snapshot once (what a file system needs for link counts); the answer is kept."""
        if self._links is None:
            root = self.root.tree
            assert root is not None
            trees = await self.repo.load_tree_closure(root)
            links: dict[str, list[str]] = {}
            stack: list[tuple[str, bytes]] = [("", root)]
            while stack:
                prefix, tree_id = stack.pop()
                if prefix.count("/") >= MAX_DEPTH:
                    raise CorruptData(f"{prefix!r} is nested deeper than {MAX_DEPTH} directories")
                for entry in trees[tree_id]:
                    path = prefix + entry.path
                    if entry.kind == "d" and entry.tree is not None:
                        stack.append((path + "/", bytes.fromhex(entry.tree)))
                    elif entry.kind == "h" and entry.link is not None:
                        links.setdefault(entry.link, []).append(path)
            self._links = {first: tuple(sorted(later)) for first, later in links.items()}
        return self._links

    # --- bytes ----------------------------------------------------------------------------------------------

    async def read(self, node: Node, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the file ``node`` (or of the file a hard link names) from ``offset``: fewer
        only at its end. Every chunk is checked against its id (``CorruptData`` if one does not match)."""
        node = await self.content(node)
        if offset < 0 or size < 0:
            raise InvalidRequest(f"cannot read {size} bytes at offset {offset} of {node.path!r}")
        end = min(node.size, offset + size)
        if offset >= end:
            return b""
        starts = self._layout(node)
        first = bisect.bisect_right(starts, offset) - 1
        last = bisect.bisect_left(starts, end) - 1
        ids = [bytes.fromhex(c) for c, _ in node.chunks[first : last + 1] if c is not None]
        found = await self.cache.fetch(self.repo, ids, f"chunk of {node.path!r}")
        self._read_ahead(node, starts, last + 1)
        parts: list[bytes] = []
        for i in range(first, last + 1):
            chunk, length = node.chunks[i]
            lo = max(offset, starts[i]) - starts[i]
            hi = min(end, starts[i] + length) - starts[i]
            data = b"\0" * length if chunk is None else found[bytes.fromhex(chunk)]
            if len(data) != length:
                raise CorruptData(
                    f"chunk {chunk} of {node.path!r} holds {len(data)} bytes, its entry says {length}; "
                    "run 'rok repo check'"
                )
            parts.append(data[lo:hi])
        return b"".join(parts)

    def _layout(self, node: Node) -> list[int]:
        """The offset at which each chunk of ``node`` starts, and its size at the end."""
        key = (node.path, *(c or "" for c, _ in node.chunks[:1]), str(len(node.chunks)))
        starts = self._layouts.get(key)
        if starts is None:
            starts = [0]
            for _, length in node.chunks:
                starts.append(starts[-1] + length)
            if starts[-1] != node.size:
                raise CorruptData(
                    f"the chunks of {node.path!r} add up to {starts[-1]} bytes, its entry says {node.size}; "
                    "run 'rok repo check'"
                )
            self._layouts[key] = starts
            while len(self._layouts) > LAYOUTS:
                self._layouts.popitem(last=False)
        else:
            self._layouts.move_to_end(key)
        return starts

    def _read_ahead(self, node: Node, starts: list[int], following: int) -> None:
        ahead: list[bytes] = []
        i = following
        while i < len(node.chunks) and starts[i] - starts[following] < READ_AHEAD:
            chunk = node.chunks[i][0]
            if chunk is not None:
                ahead.append(bytes.fromhex(chunk))
            i += 1
        ahead = [c for c in ahead if not self.cache.holds(c)]
        if not ahead:
            return
        task = asyncio.get_running_loop().create_task(self._fetch_quietly(ahead, node.path))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fetch_quietly(self, chunks: list[bytes], path: str) -> None:
        try:
            await self.cache.fetch(self.repo, chunks, f"chunk of {path!r}")
        except Exception:  # read ahead only: the read that needs these chunks reports the failure
            return

    async def close(self) -> None:
        """Stop reading ahead."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- trees ----------------------------------------------------------------------------------------------

    async def _index(self, tree_id: bytes) -> dict[str, Entry]:
        index = self._indexes.get(tree_id)
        if index is None:
            entries = (await self.repo.load_trees([tree_id]))[tree_id]
            index = {e.path: e for e in sorted(entries, key=lambda e: e.path)}
            self._indexes[tree_id] = index
            while len(self._indexes) > TREE_INDEXES:
                self._indexes.popitem(last=False)
        else:
            self._indexes.move_to_end(tree_id)
        return index

    @property
    def _short(self) -> str:
        return self.snapshot_id[:12]


def split_path(path: str) -> list[str]:
    """A path within a snapshot as its names: ``/``-separated, leading and trailing ``/`` ignored; ``.``, ``..``
    and empty names are refused (a browser never walks up)."""
    names = [n for n in path.strip("/").split("/") if n != ""] if path.strip("/") else []
    for name in names:
        if name in (".", "..") or "\0" in name:
            raise InvalidRequest(f"path {path!r} holds {name!r}: give a plain path from the volume's root")
    return names
