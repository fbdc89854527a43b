"""A restore from a local repository reads each pack in pieces of about ``READ_PIECE`` bytes, not whole: every
chunk still lands where it belongs."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from rokstore import init_repository, restore, snapshot
from rokstore import restorer as restorer_module
from rokstore.chunker import MAX_SIZE
from rokstore.repository.backends.file import FileBackend


async def test_packs_are_read_in_pieces_and_every_file_comes_back(
    file_repo_url: str,
    source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    same_tree: Callable[[Path, Path], None],
) -> None:
    rng = random.Random(5)
    for i in range(60):  # many small files: many blobs in one pack
        (source / "dir" / f"note-{i}.bin").write_bytes(rng.randbytes(3000 + 100 * i))
    repo = await init_repository(file_repo_url)
    stats = await snapshot(repo, source)

    piece = 16 << 10
    monkeypatch.setattr(restorer_module, "READ_PIECE", piece)
    reads: list[int] = []
    real = FileBackend.get_sync

    def counted(self: FileBackend, key: str, offset: int = 0, length: int = -1) -> bytes:
        if key.startswith("packs/"):
            reads.append(length)
        return real(self, key, offset, length)

    monkeypatch.setattr(FileBackend, "get_sync", counted)
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    same_tree(source, tmp_path / "out")
    assert len(reads) > 10
    assert all(0 < n <= MAX_SIZE + 4096 for n in reads)
    assert sum(1 for n in reads if n <= piece) > len(reads) // 2  # most pieces hold several small blobs at most
    await repo.close()
