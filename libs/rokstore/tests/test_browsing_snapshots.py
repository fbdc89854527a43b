"""A snapshot is looked into path by path: only the trees on the path and the chunks of the bytes read are fetched,
every chunk checked against its id, and what is shown is what was snapshotted."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from rokstore import (
    ChunkCache,
    CorruptData,
    NotADirectory,
    PathNotFound,
    Repository,
    SnapshotView,
    init_repository,
    open_repository,
    snapshot,
)
from rokstore.errors import InvalidRequest


async def test_entries_and_bytes_are_those_of_the_snapshotted_tree(repo: Repository, source: Path) -> None:
    view = await SnapshotView.open(repo, (await snapshot(repo, source)).snapshot_id)
    names = [n.name for n in await view.listdir("")]
    assert names == sorted(os.listdir(source))
    small = await view.lookup("small.txt")
    st = os.lstat(source / "small.txt")
    assert (small.kind, small.mode, small.uid, small.gid, small.size) == ("f", 0o640, st.st_uid, st.st_gid, 6)
    assert small.mtime_ns == st.st_mtime_ns
    assert await view.read(small, 0, 100) == b"hello\n"
    note = await view.lookup("dir/deeper/note.md")
    assert note.mtime_ns == 1_600_000_000_123_456_789
    assert (await view.lookup("link")).target == "dir/big.bin"
    assert (await view.lookup("dir/deeper")).mode == 0o750
    # any range of a multi-chunk file, across chunk boundaries, is the file's bytes
    big = await view.lookup("dir/big.bin")
    assert len(big.chunks) > 1
    data = (source / "dir" / "big.bin").read_bytes()
    for offset, size in [(0, 10), (1 << 20, 3 << 20), (len(data) - 5, 100), (len(data), 10)]:
        assert await view.read(big, offset, size) == data[offset : offset + size]
    # a hard link reads as the file it names, and the file knows its later names
    link = await view.lookup("dir/hardlink.txt")
    assert (link.kind, link.link) == ("h", "small.txt")
    assert await view.read(link, 0, 100) == b"hello\n"
    assert await view.hard_links() == {"small.txt": ("dir/hardlink.txt",)}
    await view.close()


async def test_a_path_is_found_reading_only_the_trees_on_the_way(
    file_repo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "wide"
    for i in range(30):
        (root / f"d{i:02}" / "inner").mkdir(parents=True)
        (root / f"d{i:02}" / "inner" / "f.txt").write_text(f"{i}\n")
    async with await init_repository(file_repo_url) as repo:
        sid = (await snapshot(repo, root)).snapshot_id
    async with await open_repository(file_repo_url) as fresh:  # nothing remembered of the snapshot
        asked: list[bytes] = []
        load_trees = fresh.load_trees

        async def counting(tree_ids: object, **kw: bool) -> object:
            ids = list(tree_ids)  # type: ignore[call-overload]
            asked.extend(ids)
            return await load_trees(ids, **kw)

        monkeypatch.setattr(fresh, "load_trees", counting)
        view = await SnapshotView.open(fresh, sid)
        node = await view.lookup("d17/inner/f.txt")
        assert await view.read(node, 0, 10) == b"17\n"
        assert len(asked) == 3  # the root, d17 and d17/inner: not the 61 trees of the snapshot
        assert view.cache.fetched == 1  # the one chunk of the file


async def test_a_hole_reads_as_zeros_and_is_never_fetched(repo: Repository, tmp_path: Path) -> None:
    root = tmp_path / "sparse"
    root.mkdir()
    with open(root / "disk.img", "wb") as f:
        f.write(b"head")
        f.seek(64 << 20)
        f.write(b"tail")
    view = await SnapshotView.open(repo, (await snapshot(repo, root)).snapshot_id, ChunkCache())
    node = await view.lookup("disk.img")
    assert node.size == (64 << 20) + 4
    assert any(c is None for c, _ in node.chunks)
    assert await view.read(node, (32 << 20), 8) == b"\0" * 8
    assert await view.read(node, (64 << 20) - 2, 10) == b"\0\0tail"
    assert await view.read(node, 0, 4) == b"head"
    await view.close()
    assert view.cache.fetched <= 2


async def test_a_damaged_chunk_fails_its_file_and_no_other(file_repo_url: str, tmp_path: Path) -> None:
    root = tmp_path / "vol"
    root.mkdir()
    (root / "good.txt").write_text("fine\n")
    (root / "bad.bin").write_bytes(random.Random(5).randbytes(200_000))
    repo = await init_repository(file_repo_url)
    async with repo:
        sid = (await snapshot(repo, root)).snapshot_id
        view = await SnapshotView.open(repo, sid)
        bad = await view.lookup("bad.bin")
        chunk = bytes.fromhex(bad.chunks[0][0] or "")
        where = (await repo.load_index()).chunks[chunk]
        pack = Path(file_repo_url.removeprefix("file://")) / "packs" / where.pack.hex()[:2] / where.pack.hex()
        data = bytearray(pack.read_bytes())
        data[where.offset + where.length // 2] ^= 0xFF
        pack.chmod(0o644)
        pack.write_bytes(bytes(data))
        with pytest.raises(CorruptData, match="does not match its BLAKE3 id"):
            await view.read(bad, 0, 10)
        assert await view.read(await view.lookup("good.txt"), 0, 10) == b"fine\n"


async def test_paths_that_name_nothing_or_walk_up_are_refused(repo: Repository, source: Path) -> None:
    view = await SnapshotView.open(repo, (await snapshot(repo, source)).snapshot_id)
    with pytest.raises(PathNotFound, match="dir/nope"):
        await view.lookup("dir/nope")
    with pytest.raises(NotADirectory, match=r"small\.txt"):
        await view.lookup("small.txt/x")
    with pytest.raises(NotADirectory):
        await view.listdir("small.txt")
    with pytest.raises(InvalidRequest, match=r"'\.\.'"):
        await view.lookup("dir/../small.txt")
    assert (await view.lookup("/dir/")).path == "dir"
