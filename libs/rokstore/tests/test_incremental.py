"""Incremental and de-duplicated: unchanged files are not opened, known content is not uploaded again."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from rokstore import Repository, check, collect_garbage, diff, restore, snapshot


async def _pack_count(repo: Repository) -> int:
    return len(await repo.backend.list("packs/"))


async def test_unchanged_file_is_not_read_again(repo: Repository, source: Path) -> None:
    first = await snapshot(repo, source)
    assert first.files_opened == 4  # the hard link's second name is not read
    packs = await _pack_count(repo)
    second = await snapshot(repo, source)
    assert second.files_opened == 0
    assert second.bytes_read == 0
    assert second.bytes_new == 0
    assert await _pack_count(repo) == packs
    # only the snapshot record: the root tree is the cached one, so no tree, no pack, no index file
    assert second.bytes_uploaded < 8192
    assert len(await repo.backend.list("index/")) == 1


async def test_changed_file_is_read_and_only_its_new_chunk_uploaded(repo: Repository, source: Path) -> None:
    await snapshot(repo, source)
    with open(source / "dir" / "big.bin", "ab") as f:
        f.write(b"!")
    os.utime(source / "small.txt")
    stats = await snapshot(repo, source)
    assert stats.files_opened == 2
    # FastCDC: appending a byte changes only the last chunk of the 3.4 MB file (random data: its length varies
    # from run to run, up to the 4 MiB maximum, so compare with the chunk itself rather than a fixed bound)
    entries = await repo.load_entries(await repo.load_record(stats.snapshot_id))
    big = next(e for e in entries if e.path == "dir/big.bin")
    assert len(big.content) > 1
    assert stats.bytes_new == big.content[-1][1]
    assert stats.bytes_read == os.path.getsize(source / "dir" / "big.bin") + len("hello\n")


async def test_content_from_another_volume_is_not_uploaded_again(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    await snapshot(repo, source)
    other = tmp_path / "other-volume"
    other.mkdir()
    (other / "copy.bin").write_bytes((source / "dir" / "big.bin").read_bytes())
    (other / "copy.txt").write_text("hello\n")
    time.sleep(0.06)  # past the racy window, as in conftest.settle
    stats = await snapshot(repo, other)
    assert stats.files_opened == 2
    assert stats.bytes_new == 0
    assert stats.bytes_uploaded < 8192


async def test_file_changed_just_before_a_snapshot_is_read_again_next_time(repo: Repository, tmp_path: Path) -> None:
    volume = tmp_path / "racy"
    volume.mkdir()
    (volume / "hot.txt").write_text("written right before the snapshot")
    await snapshot(repo, volume)  # hot.txt's ctime is within the racy window: not trusted from the cache
    again = await snapshot(repo, volume)
    assert again.files_opened == 1


async def test_cache_key_identifies_a_volume_across_mount_paths(repo: Repository, source: Path, tmp_path: Path) -> None:
    await snapshot(repo, source, cache_key="pv-123")
    moved = tmp_path / "pod-2" / "volume"
    moved.parent.mkdir()
    # The same volume under another pod path: a bind mount keeps inodes and ctimes; a rename does too.
    os.rename(source, moved)
    stats = await snapshot(repo, moved, cache_key="pv-123")
    assert stats.files_opened == 0
    assert stats.cache_key == "pv-123"


async def test_cache_entries_for_chunks_gc_removed_are_not_trusted(repo: Repository, source: Path) -> None:
    first = await snapshot(repo, source)
    await repo.backend.delete(f"snapshots/{first.snapshot_id}")
    await collect_garbage(repo)
    again = await snapshot(repo, source)
    assert again.files_opened == 3  # every file with content is read again (the empty file has no chunk)
    assert again.bytes_new > 3 << 20
    report = await check(repo, read_data=True)
    assert report.ok, report.problems


async def test_unchanged_tree_is_reused_and_any_change_gives_a_new_one(
    repo: Repository, source: Path, tmp_path: Path, same_tree: Callable[[Path, Path], None]
) -> None:
    """The cached tree is reused only when every entry matches: each kind of change restores as made."""
    first = await snapshot(repo, source)
    again = await snapshot(repo, source)
    records = [await repo.load_record(s.snapshot_id) for s in (first, again)]
    assert records[0].tree == records[1].tree
    changes: list[Callable[[], None]] = [
        lambda: (source / "new-dir").mkdir(),
        lambda: os.chmod(source / "dir", 0o700),
        lambda: (source / "new-link").symlink_to("small.txt"),
        lambda: os.unlink(source / "empty"),
        lambda: os.rename(source / "dir" / "deeper" / "note.md", source / "dir" / "deeper" / "renamed.md"),
        lambda: os.chmod(source / "small.txt", 0o600),
        lambda: os.unlink(source / "dir" / "hardlink.txt"),
        lambda: (source / "empty-dir" / "added.txt").write_text("new\n"),
        lambda: os.rmdir(source / "new-dir"),
    ]
    roots = {records[0].tree}
    for number, change in enumerate(changes):
        change()
        time.sleep(0.06)  # past the racy window, as in conftest.settle
        stats = await snapshot(repo, source)
        unchanged = await snapshot(repo, source)
        root = (await repo.load_record(stats.snapshot_id)).tree
        assert root not in roots, f"change {number} kept the old root tree"
        assert (await repo.load_record(unchanged.snapshot_id)).tree == root
        roots.add(root)
        target = tmp_path / f"restored-{number}"
        await restore(repo, unchanged.snapshot_id, target)
        same_tree(source, target)


async def test_a_change_deep_in_the_tree_writes_only_the_trees_on_its_path(repo: Repository, tmp_path: Path) -> None:
    """Siblings keep their tree ids without being encoded again, and a diff reads only the changed path."""
    volume = tmp_path / "deep"
    for branch in ("a", "b", "c"):
        for leaf in ("x", "y"):
            (volume / branch / leaf).mkdir(parents=True)
            (volume / branch / leaf / "f.txt").write_text(f"{branch}/{leaf}\n")
    time.sleep(0.06)  # past the racy window, as in conftest.settle
    before = await snapshot(repo, volume)
    blobs_before = set((await repo.load_index()).chunks)
    (volume / "b" / "y" / "f.txt").write_text("changed\n")
    time.sleep(0.06)
    after = await snapshot(repo, volume)
    assert after.files_opened == 1
    new = set((await repo.load_index()).chunks) - blobs_before
    trees_after = await repo.load_tree_closure(bytes.fromhex((await repo.load_record(after.snapshot_id)).tree))
    # the changed file's one chunk, and the trees of b/y, b and the root: nothing else was stored
    assert len(new) == 4 and len(new & trees_after.keys()) == 3

    read: list[bytes] = []
    load = repo.load_trees

    async def counting(ids: Iterable[bytes]) -> dict[bytes, list[dict[str, object]]]:
        ids = list(ids)
        read.extend(ids)
        return await load(ids)

    repo._trees.clear()  # nothing from memory: count what the diff reads
    repo.load_trees = counting  # type: ignore[method-assign]
    changes = await diff(repo, before.snapshot_id, after.snapshot_id)
    assert (changes.added, changes.removed, changes.changed) == ([], [], ["b/y/f.txt"])
    assert len(read) == 6  # the two roots, the two trees of b, the two of b/y: a and c are never read
