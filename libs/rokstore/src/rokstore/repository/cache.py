"""The node-local cache: which chunks an unchanged file holds, and copies of immutable index files.

Files cache: one file per (repository, volume) under ``<cache_dir>/files/``. For each directory (relative path,
root ``""``) it keeps its *listing*, packed in one bytes value (:func:`pack_listing`): the stat record
``(mode, size, mtime_ns, ctime_ns, inode, name)`` of every entry in it, in the byte order of the names, as the last
snapshot saw them, and the tree id that directory had. A directory whose listing is the cached one again (one
comparison of bytes, against the signature :func:`rokscan.scan` builds in C without a Python object per entry)
is that tree again: reused by its id, its entries neither built nor encoded. In a directory whose listing changed,
a file whose record is the cached one is not opened again: its chunks come from the cache (``(content, xattrs)``,
apart), and are reused only if the repository's index still holds them (gc may have removed them). An entry the
cache must not vouch for (changed within the racy window, unreadable) is saved with the mode ``0xFFFFFFFF``, which
no stat gives, so its directory's listing matches nothing and the entry is read as ``(name, -1)``.
The content part is decoded only when needed, and only for the directories that need it (an unchanged
directory never does): it is a list of parts, later ones overriding earlier ones, each a pickled dict of
directory -> its files' content pickled on its own, so that a snapshot which read a few files appends what it
read instead of pickling every file's content again (the list is compacted once it grows), and one that must
encode a few changed directories decodes only theirs.
A long-running process keeps the state it last read or wrote in memory, and reads the file again only when
it changed on disk (another process wrote it); writing it happens in a background thread once the snapshot is
committed (:meth:`FileCache.save_later`), and the next load of the same file waits for that write.
Index cache: ``<cache_dir>/index/<repository id>/<index id>``, verified against its BLAKE3 id when read.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import secrets
import struct
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import zstandard

from rokstore.memory import collector_paused

Child = tuple[Any, ...]  # (name, mode, size, mtime_ns, ctime_ns, inode), or (name, -1): not vouched for
Listing = tuple[Child, ...]  # a directory's entries, in name order
Packed = bytes  # a listing as the cache keeps it (pack_listing)
Content = tuple[Any, dict[str, str]]  # ([[chunk hex | None, length], ...], xattrs)
CACHE_VERSION = 7
MAX_CONTENT_PARTS = 8
RECORD = struct.Struct("<IqqqQH")  # mode, size, mtime_ns, ctime_ns, inode, name length; then the name's bytes
UNVOUCHED = 0xFFFFFFFF  # the mode of an entry not vouched for: no stat gives it


def pack_listing(children: Iterable[Child]) -> Packed:
    """A directory's listing packed: one record per child in the byte order of the names, as
    :func:`rokscan.scan` builds it from the same stats (the extension and this agree byte for byte)."""
    pack = RECORD.pack
    fsencode = os.fsencode
    records = []
    for child in children:
        name = fsencode(child[0])
        if len(child) == 6:
            records.append((name, pack(child[1], child[2], child[3], child[4], child[5], len(name))))
        else:
            records.append((name, pack(UNVOUCHED, 0, 0, 0, 0, len(name))))
    records.sort()
    return b"".join([head + name for name, head in records])


def unpack_listing(packed: Packed) -> list[Child]:
    """The children of a packed listing (an entry not vouched for as ``(name, -1)``)."""
    out: list[Child] = []
    unpack, size, fsdecode = RECORD.unpack_from, RECORD.size, os.fsdecode
    offset, end = 0, len(packed)
    while offset < end:
        mode, st_size, mtime, ctime, ino, length = unpack(packed, offset)
        offset += size
        name = fsdecode(packed[offset : offset + length])
        offset += length
        out.append((name, -1) if mode == UNVOUCHED else (name, mode, st_size, mtime, ctime, ino))
    return out


def default_cache_dir() -> Path:
    env = os.environ.get("ROK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "rok"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _loads(data: bytes) -> Any:
    with collector_paused():  # many small objects: the collector would run several times while building them
        return pickle.loads(data)


@dataclass
class CachedState:
    """What the last snapshot of a volume saved; never changed once made (a long-running process shares it)."""

    listings: dict[str, Packed] = field(default_factory=dict)  # directory -> its listing, packed
    reusable: frozenset[str] = frozenset()  # directories whose cached tree may be reused when the listing matches
    index: frozenset[str] = frozenset()
    trees: dict[str, str] = field(default_factory=dict)  # directory (relative path, root "") -> tree id hex
    parts: list[bytes] = field(default_factory=list)
    _decoded: list[dict[str, bytes]] | None = None

    def _directories(self) -> list[dict[str, bytes]]:
        if self._decoded is None:
            self._decoded = [_loads(part) for part in self.parts]
        return self._decoded

    def content_in(self, directories: Collection[str]) -> dict[str, Content]:
        """The cached content of the files in ``directories`` (relative paths, the root ``""``)."""
        content: dict[str, Content] = {}
        try:
            for part in self._directories():
                for directory in directories:
                    blob = part.get(directory)
                    if blob is not None:
                        content.update(_loads(blob))
        except Exception:  # damaged: the files it would have described are read again
            return {}
        return content

    def content(self) -> dict[str, Content]:
        """The cached content of every file."""
        try:
            return self.content_in({d for part in self._directories() for d in part})
        except Exception:
            return {}

    def parts_with(self, new: dict[str, Content], reused: int, live: Callable[[], list[str]]) -> list[bytes]:
        """The content parts to save: this snapshot's reads appended, or everything still used (the files
        ``live`` names) in one part."""
        if self.parts and len(self.parts) < MAX_CONTENT_PARTS and len(new) * 8 <= reused:
            return [*self.parts, _part(new)] if new else list(self.parts)
        old = self.content()
        content = {rel: old[rel] for rel in live() if rel in old}
        content.update(new)
        return [_part(content)]


def _part(content: dict[str, Content]) -> bytes:
    """One content part: the files grouped by directory, each directory's content pickled on its own."""
    grouped: dict[str, dict[str, Content]] = {}
    for rel, value in content.items():
        grouped.setdefault(rel.rpartition("/")[0], {})[rel] = value
    return pickle.dumps({d: pickle.dumps(files, protocol=5) for d, files in grouped.items()}, protocol=5)


_memory: dict[Path, tuple[tuple[int, int, int], CachedState]] = {}  # path -> (its stat when read/written, state)
_writes: dict[Path, concurrent.futures.Future[None]] = {}  # path -> its write in progress
_memory_lock = threading.Lock()
_writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rok-cache")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class FileCache:
    def __init__(self, cache_dir: Path, repo_id: str, cache_key: str) -> None:
        name = blake3.blake3(f"{repo_id}\0{cache_key}".encode()).hexdigest()[:32]
        self.path = cache_dir / "files" / name

    def load(self) -> CachedState:
        """What the last snapshot saved; a missing or damaged cache is empty (and only costs a full read)."""
        with _memory_lock:
            pending = _writes.get(self.path)
        if pending is not None:
            pending.result()
        stamp = _stamp(self.path)
        with _memory_lock:
            known = _memory.get(self.path)
        if stamp is not None and known is not None and known[0] == stamp:
            return known[1]
        state = self._read()
        if stamp is not None:
            with _memory_lock:
                _memory[self.path] = (stamp, state)
        return state

    def _read(self) -> CachedState:
        try:
            data = zstandard.ZstdDecompressor().decompress(self.path.read_bytes(), max_output_size=1 << 32)
            doc = _loads(data)
            if doc.get("version") != CACHE_VERSION:
                return CachedState()
            return CachedState(
                doc["listings"],
                frozenset(doc["reusable"]),
                frozenset(doc["index"]),
                dict(doc["trees"]),
                list(doc["content"]),
            )
        except Exception:
            return CachedState()

    def save(self, state: CachedState) -> None:
        try:
            doc = {
                "version": CACHE_VERSION,
                "listings": state.listings,
                "reusable": sorted(state.reusable),
                "content": state.parts,
                "index": sorted(state.index),
                "trees": state.trees,
            }
            data = zstandard.ZstdCompressor(level=1).compress(pickle.dumps(doc, protocol=5))
            _atomic_write(self.path, data)
        except OSError:
            with _memory_lock:
                _memory.pop(self.path, None)
            return
        stamp = _stamp(self.path)
        with _memory_lock:
            if stamp is None:
                _memory.pop(self.path, None)
            else:
                _memory[self.path] = (stamp, state)

    def save_later(self, make: Callable[[], CachedState]) -> concurrent.futures.Future[None]:
        """Build the state with ``make`` and write it in the background; the next :meth:`load` waits for it."""
        with _memory_lock:
            previous = _writes.get(self.path)

            def write() -> None:
                if previous is not None:
                    previous.result()
                self.save(make())

            future = _writer.submit(write)
            _writes[self.path] = future
        future.add_done_callback(self._written)
        return future

    def _written(self, future: concurrent.futures.Future[None]) -> None:
        with _memory_lock:
            if _writes.get(self.path) is future:
                del _writes[self.path]


class IndexCache:
    def __init__(self, cache_dir: Path, repo_id: str) -> None:
        self.dir = cache_dir / "index" / repo_id

    def get(self, index_id: str) -> bytes | None:
        try:
            data = (self.dir / index_id).read_bytes()
        except OSError:
            return None
        return data if blake3.blake3(data).hexdigest() == index_id else None

    def put(self, index_id: str, data: bytes) -> None:
        try:
            _atomic_write(self.dir / index_id, data)
        except OSError:
            pass

    def prune(self, keep: set[str]) -> None:
        try:
            for path in self.dir.iterdir():
                if path.name not in keep:
                    path.unlink(missing_ok=True)
        except OSError:
            pass
