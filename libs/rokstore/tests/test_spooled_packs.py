"""A local repository's packs are written to their file system while they fill, not held in memory: the same
bytes as a pack made in memory, put in place under their hash, and never left behind by a snapshot that fails."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import blake3
import pytest
from rokstore import Repository, init_repository, restore, snapshot
from rokstore.archiver import saver
from rokstore.errors import StoreError
from rokstore.repository.backends.file import FileBackend
from rokstore.repository.packs import SPOOL_PREFIX, Packer, SealedPack, compress, parse_pack


def spooled(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(SPOOL_PREFIX)]


def pack_files(root: Path) -> list[Path]:
    return [p for p in (root / "packs").rglob("*") if p.is_file()]


def test_a_spooled_pack_is_byte_for_byte_the_pack_made_in_memory(tmp_path: Path) -> None:
    rng = random.Random(7)
    blobs = [rng.randbytes(rng.randrange(1, 300_000)) for _ in range(40)] + [b"a" * 200_000] * 3
    in_memory: list[SealedPack] = []
    on_disk: list[SealedPack] = []
    memory_packer = Packer(in_memory.append, target=1 << 20)
    disk_packer = Packer(on_disk.append, target=1 << 20, spool=tmp_path / "spool")
    for blob in blobs:
        stored, flags = compress(blob)
        chunk = blake3.blake3(blob).digest()
        memory_packer.add(chunk, stored, len(blob), flags)
        disk_packer.add(chunk, stored, len(blob), flags)
    memory_packer.flush()
    disk_packer.flush()

    assert len(on_disk) == len(in_memory) > 2
    for mem, disk in zip(in_memory, on_disk, strict=True):
        assert disk.path is not None and disk.data == b""
        data = Path(disk.path).read_bytes()
        assert data == bytes(mem.data)
        assert disk.pack_id == mem.pack_id == blake3.blake3(data).digest()
        assert disk.size == mem.size == len(data)
        assert parse_pack(data) == disk.blobs == mem.blobs


def test_discarding_a_partly_filled_pack_removes_its_file(tmp_path: Path) -> None:
    emitted: list[SealedPack] = []
    packer = Packer(emitted.append, spool=tmp_path / "spool")
    packer.add(b"\1" * 32, b"some bytes", 10, 0)
    assert len(spooled(tmp_path)) == 1
    packer.discard()
    packer.flush()
    assert spooled(tmp_path) == [] and emitted == []


async def test_a_local_snapshot_puts_its_packs_in_place_under_their_hash(
    file_repo_url: str, source: Path, tmp_path: Path
) -> None:
    repo = await init_repository(file_repo_url)
    root = Path(file_repo_url.removeprefix("file://"))
    stats = await snapshot(repo, source)
    files = pack_files(root)
    assert files and spooled(root) == []
    for path in files:
        assert path.name == blake3.blake3(path.read_bytes()).hexdigest()
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    assert (tmp_path / "out" / "dir" / "big.bin").read_bytes() == (source / "dir" / "big.bin").read_bytes()
    await repo.close()


@pytest.mark.parametrize("where", ["while a pack fills", "while a pack is put in place"])
async def test_a_failed_snapshot_leaves_no_spooled_pack_and_the_earlier_one_restorable(
    where: str, file_repo_url: str, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo: Repository = await init_repository(file_repo_url)
    root = Path(file_repo_url.removeprefix("file://"))
    first = await snapshot(repo, source)
    before = sorted(pack_files(root))
    (source / "new.bin").write_bytes(random.Random(11).randbytes(3 << 20))

    if where == "while a pack fills":
        real = saver.compress
        calls = 0

        def failing(data: bytes | memoryview) -> tuple[bytes | memoryview, int]:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(data)

        monkeypatch.setattr(saver, "compress", failing)
    else:

        def full(self: FileBackend, path: str, key: str, durable: bool = True) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(FileBackend, "place_sync", full)

    with pytest.raises((OSError, StoreError)):
        await snapshot(repo, source)
    assert spooled(root) == []
    assert sorted(pack_files(root)) == before
    monkeypatch.undo()
    await restore(repo, first.snapshot_id, tmp_path / "out")
    assert (tmp_path / "out" / "dir" / "big.bin").read_bytes() == (source / "dir" / "big.bin").read_bytes()
    await repo.close()
