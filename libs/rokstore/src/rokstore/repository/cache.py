"""The node-local cache: which chunks an unchanged file holds, and copies of immutable index files.

Files cache: one file per (repository, volume) under ``<cache_dir>/files/``. It maps a path relative to the
volume to the stat signature ``(size, mtime_ns, ctime_ns, inode)`` the file had when it was read and, apart,
to ``(content, xattrs)``; a file whose stat matches is not opened again, and its chunks are reused only if the
repository's index still holds them (gc may have removed them). It also keeps the signature
``(mode, mtime_ns, ctime_ns, inode)`` of every other entry (directories, symlinks, ...) and the tree id each
directory had: a directory whose entries all match is that tree again, reused without being encoded.
The content part is decoded only when needed, and only for the directories that need it (an unchanged
directory never does): it is a list of parts, later ones overriding earlier ones, each a pickled dict of
directory -> its files' content pickled on its own, so that a snapshot which read a few files appends what it
read instead of pickling every file's content again (the list is compacted once it grows), and one that must
encode a few changed directories decodes only theirs.
Index cache: ``<cache_dir>/index/<repository id>/<index id>``, verified against its BLAKE3 id when read.
"""

from __future__ import annotations

import gc
import os
import pickle
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import zstandard

Signature = tuple[
    int, int, int, int
]  # files: (size, mtime_ns, ctime_ns, inode); others: (mode, mtime_ns, ctime_ns, inode)
Content = tuple[Any, dict[str, str]]  # ([[chunk hex | None, length], ...], xattrs)
FileRecord = tuple[Any, ...]  # (size, mtime_ns, ctime_ns, inode, content, xattrs)
CACHE_VERSION = 5
MAX_CONTENT_PARTS = 8


def default_cache_dir() -> Path:
    env = os.environ.get("ROK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "rok"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _loads(data: bytes) -> Any:
    # Many small objects: the cyclic collector would run several times while building them, for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return pickle.loads(data)
    finally:
        if enabled:
            gc.enable()


@dataclass
class CachedState:
    files: dict[str, Signature] = field(default_factory=dict)
    others: dict[str, Signature] = field(default_factory=dict)
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

    def parts_with(self, new: dict[str, Content], reused: list[str]) -> list[bytes]:
        """The content parts to save: this snapshot's reads appended, or everything still used in one part."""
        if self.parts and len(self.parts) < MAX_CONTENT_PARTS and len(new) * 8 <= len(reused):
            return [*self.parts, _part(new)] if new else list(self.parts)
        old = self.content()
        content = {rel: old[rel] for rel in reused if rel in old}
        content.update(new)
        return [_part(content)]


def _part(content: dict[str, Content]) -> bytes:
    """One content part: the files grouped by directory, each directory's content pickled on its own."""
    grouped: dict[str, dict[str, Content]] = {}
    for rel, value in content.items():
        grouped.setdefault(rel.rpartition("/")[0], {})[rel] = value
    return pickle.dumps({d: pickle.dumps(files, protocol=5) for d, files in grouped.items()}, protocol=5)


class FileCache:
    def __init__(self, cache_dir: Path, repo_id: str, cache_key: str) -> None:
        name = blake3.blake3(f"{repo_id}\0{cache_key}".encode()).hexdigest()[:32]
        self.path = cache_dir / "files" / name

    def load(self) -> CachedState:
        """What the last snapshot saved; a missing or damaged cache is empty (and only costs a full read)."""
        try:
            data = zstandard.ZstdDecompressor().decompress(self.path.read_bytes(), max_output_size=1 << 32)
            doc = _loads(data)
            if doc.get("version") != CACHE_VERSION:
                return CachedState()
            return CachedState(
                doc["files"], doc["others"], frozenset(doc["index"]), dict(doc["trees"]), list(doc["content"])
            )
        except Exception:
            return CachedState()

    def save(
        self,
        files: dict[str, Signature],
        content: list[bytes],
        others: dict[str, Signature],
        index_files: list[str],
        trees: dict[str, str],
    ) -> None:
        try:
            doc = {
                "version": CACHE_VERSION,
                "files": files,
                "content": content,
                "others": others,
                "index": sorted(index_files),
                "trees": trees,
            }
            data = zstandard.ZstdCompressor(level=1).compress(pickle.dumps(doc, protocol=5))
            _atomic_write(self.path, data)
        except OSError:
            pass


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
