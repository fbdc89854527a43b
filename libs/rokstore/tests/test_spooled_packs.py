"""A snapshot's packs are written to files while they fill, not held in memory (in a local repository itself,
else in the node-local cache): the same bytes as a pack made in memory, stored under their hash, and never left
behind by a snapshot that fails, on either backend."""

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
from rokstore.repository.backends.s3 import S3Backend
from rokstore.repository.packs import (
    SPOOL_PREFIX,
    Packer,
    SealedPack,
    build_pack,
    compress,
    pack_key,
    parse_pack,
    remove_stale_spools,
)


def spooled(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(SPOOL_PREFIX)]


def pack_files(root: Path) -> list[Path]:
    return [p for p in (root / "packs").rglob("*") if p.is_file()]


def test_a_spooled_pack_is_byte_for_byte_the_pack_made_in_memory(tmp_path: Path) -> None:
    rng = random.Random(7)
    raw = [rng.randbytes(rng.randrange(1, 300_000)) for _ in range(40)] + [b"a" * 200_000] * 3
    blobs = []
    for data in raw:
        stored, flags = compress(data)
        blobs.append((blake3.blake3(data).digest(), stored, len(data), flags))
    emitted: list[SealedPack] = []
    packer = Packer(emitted.append, tmp_path / "spool", target=1 << 20)
    for blob in blobs:
        packer.add(*blob)
    packer.flush()

    assert len(emitted) > 2
    start = 0
    for pack in emitted:
        assert pack.path is not None and pack.data == b""
        data = Path(pack.path).read_bytes()
        in_memory = build_pack(blobs[start : start + len(pack.blobs)])
        start += len(pack.blobs)
        assert data == in_memory.data
        assert pack.pack_id == in_memory.pack_id == blake3.blake3(data).digest()
        assert pack.size == len(data)
        assert parse_pack(data) == pack.blobs == in_memory.blobs
    assert start == len(blobs)


def test_discarding_a_partly_filled_pack_removes_its_file(tmp_path: Path) -> None:
    emitted: list[SealedPack] = []
    packer = Packer(emitted.append, tmp_path / "spool")
    packer.add(b"\1" * 32, b"some bytes", 10, 0)
    assert len(spooled(tmp_path)) == 1
    packer.discard()
    packer.flush()
    assert spooled(tmp_path) == [] and emitted == []


def test_only_spooled_packs_left_long_ago_are_removed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    old, fresh, other = spool / f"{SPOOL_PREFIX}old", spool / f"{SPOOL_PREFIX}fresh", spool / "keep-me"
    for path in (old, fresh, other):
        path.write_bytes(b"x")
    os.utime(old, (0, 0))
    os.utime(other, (0, 0))
    assert remove_stale_spools(spool) == 1
    assert sorted(p.name for p in spool.iterdir()) == sorted([fresh.name, other.name])
    assert remove_stale_spools(tmp_path / "missing") == 0


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


@pytest.mark.parametrize("where", ["while a pack fills", "while a pack is stored"])
async def test_a_failed_snapshot_leaves_no_spooled_pack_and_the_earlier_one_restorable(
    where: str, repo: Repository, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await snapshot(repo, source)
    before = {o.key for o in await repo.backend.list("packs/")}
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

        async def full(self: object, key: str, path: str) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(FileBackend, "put_file", full)
        monkeypatch.setattr(S3Backend, "put_file", full)

    with pytest.raises((OSError, StoreError)):
        await snapshot(repo, source)
    assert spooled(repo.spool_dir()) == []
    assert {o.key for o in await repo.backend.list("packs/")} == before
    monkeypatch.undo()
    await restore(repo, first.snapshot_id, tmp_path / "out")
    assert (tmp_path / "out" / "dir" / "big.bin").read_bytes() == (source / "dir" / "big.bin").read_bytes()


async def test_packs_uploaded_from_the_spool_are_stored_whole_and_removed_locally(
    s3_repo_url: str, source: Path, tmp_path: Path
) -> None:
    repo = await init_repository(s3_repo_url)
    stats = await snapshot(repo, source)
    listed = await repo.backend.list("packs/")
    assert listed and spooled(repo.spool_dir()) == []
    for info in listed:
        data = await repo.backend.get(info.key)
        assert info.key == pack_key(blake3.blake3(data).digest())
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    assert (tmp_path / "out" / "dir" / "big.bin").read_bytes() == (source / "dir" / "big.bin").read_bytes()
    await repo.close()
