"""The node-local cache: which chunks an unchanged file holds, and copies of immutable index files.

Files cache: one file per (repository, volume) under ``<cache_dir>/files/``, mapping a path relative to the
volume to ``(size, mtime_ns, ctime_ns, inode, content)``. A file whose stat matches is not opened again; its
chunks are reused only if the repository's index still holds them (gc may have removed them).
Index cache: ``<cache_dir>/index/<repository id>/<index id>``, verified against its BLAKE3 id when read.
"""

from __future__ import annotations

import os
import pickle
import secrets
from pathlib import Path
from typing import Any

import blake3
import zstandard

FileRecord = tuple[Any, ...]  # (size, mtime_ns, ctime_ns, inode, content, xattrs)


def default_cache_dir() -> Path:
    env = os.environ.get("ROK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "rok"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class FileCache:
    def __init__(self, cache_dir: Path, repo_id: str, cache_key: str) -> None:
        name = blake3.blake3(f"{repo_id}\0{cache_key}".encode()).hexdigest()[:32]
        self.path = cache_dir / "files" / name

    def load(self) -> tuple[dict[str, FileRecord], frozenset[str]]:
        """(records, the index files that held every chunk the records name when they were saved)."""
        try:
            data = zstandard.ZstdDecompressor().decompress(self.path.read_bytes(), max_output_size=1 << 32)
            doc = pickle.loads(data)
            return doc["files"], frozenset(doc["index"])
        except Exception:  # a missing or damaged cache only costs a full read
            return {}, frozenset()

    def save(self, records: dict[str, FileRecord], index_files: list[str]) -> None:
        try:
            doc = {"files": records, "index": sorted(index_files)}
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
