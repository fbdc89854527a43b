"""gc removes what no snapshot references, never what a running snapshot needs; two writers both commit."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from rokstore import Progress, Repository, check, collect_garbage, open_repository, restore, snapshot


def _volume(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


async def test_gc_removes_data_no_snapshot_references(repo: Repository, tmp_path: Path) -> None:
    keep = os.urandom(2 << 20)
    drop = os.urandom(6 << 20)
    old = await snapshot(repo, _volume(tmp_path / "v1", {"keep.bin": keep, "drop.bin": drop}))
    kept = await snapshot(repo, _volume(tmp_path / "v2", {"keep.bin": keep}))
    await repo.backend.delete(f"snapshots/{old.snapshot_id}")  # as if the old snapshot were forgotten
    before = sum(i.size for i in await repo.backend.list("packs/"))
    dry = await collect_garbage(repo, dry_run=True)
    assert dry.bytes_freed > 5 << 20
    assert sum(i.size for i in await repo.backend.list("packs/")) == before
    report = await collect_garbage(repo)
    assert report.bytes_freed == dry.bytes_freed
    after = sum(i.size for i in await repo.backend.list("packs/"))
    assert after < before - (5 << 20)
    assert len(await repo.backend.list("index/")) == 1
    assert (await check(repo, read_data=True)).ok
    await restore(repo, kept.snapshot_id, tmp_path / "out")
    assert (tmp_path / "out" / "keep.bin").read_bytes() == keep


async def test_gc_repacks_a_mostly_garbage_pack(repo: Repository, tmp_path: Path) -> None:
    small = {f"f{i}.txt": os.urandom(100_000) for i in range(30)}  # all in one pack
    old = await snapshot(repo, _volume(tmp_path / "v1", small))
    kept = await snapshot(repo, _volume(tmp_path / "v2", {"f0.txt": small["f0.txt"]}))
    await repo.backend.delete(f"snapshots/{old.snapshot_id}")
    report = await collect_garbage(repo)
    assert report.packs_repacked == 1
    assert report.packs_written == 1
    packs = await repo.backend.list("packs/")
    assert len(packs) == 2 and all(p.size < 200_000 for p in packs)  # the repacked data, and the kept trees
    await restore(repo, kept.snapshot_id, tmp_path / "out")
    assert (tmp_path / "out" / "f0.txt").read_bytes() == small["f0.txt"]


async def test_gc_during_a_snapshot_keeps_everything_that_snapshot_needs(
    repo_url: str, tmp_path: Path, same_tree
) -> None:
    shared = os.urandom(3 << 20)
    async with _init(repo_url) as repo:
        old = await snapshot(repo, _volume(tmp_path / "v1", {"shared.bin": shared, "gone.bin": os.urandom(5 << 20)}))
        await repo.backend.delete(f"snapshots/{old.snapshot_id}")
        # The new snapshot re-uses 'shared.bin' from the now unreferenced pack: exactly what gc must not delete.
        volume = _volume(tmp_path / "v2", {"shared.bin": shared, "new.bin": os.urandom(5 << 20)})
        gc_repo = await open_repository(repo_url)
        gc_task: list[asyncio.Task] = []

        def start_gc_mid_snapshot(p: Progress) -> None:
            # Called on the event loop when the data is read but not yet committed.
            if p.phase == "upload" and not gc_task:
                gc_task.append(asyncio.get_running_loop().create_task(collect_garbage(gc_repo)))

        stats = await snapshot(repo, volume, progress=start_gc_mid_snapshot, cache_dir=tmp_path / "fresh-cache")
        assert gc_task, "gc was not started during the snapshot"
        gc_report = await gc_task[0]
        await gc_repo.close()
        assert gc_report.snapshots == 1  # gc ran after the snapshot committed, and saw it
        assert gc_report.bytes_freed >= 4 << 20  # gone.bin went away (its pack was repacked)
        assert stats.bytes_new == 5 << 20  # shared.bin was de-duplicated against the garbage pack
        await restore(repo, stats.snapshot_id, tmp_path / "out")
        same_tree(volume, tmp_path / "out")
        assert (await check(repo, read_data=True)).ok


def _init(url: str):  # type: ignore[no-untyped-def]
    from rokstore import init_repository

    class _Ctx:
        async def __aenter__(self) -> Repository:
            self.repo = await init_repository(url)
            return self.repo

        async def __aexit__(self, *exc: object) -> None:
            await self.repo.close()

    return _Ctx()


async def test_two_writers_at_once_both_produce_valid_snapshots(repo_url: str, tmp_path: Path, same_tree) -> None:
    common = os.urandom(2 << 20)
    a = _volume(tmp_path / "node-a", {"common.bin": common, "a.bin": os.urandom(3 << 20)})
    b = _volume(tmp_path / "node-b", {"common.bin": common, "b.bin": os.urandom(3 << 20)})
    async with _init(repo_url) as repo:
        other = await open_repository(repo_url)
        try:
            sa, sb = await asyncio.gather(
                snapshot(repo, a, cache_dir=tmp_path / "cache-a"),
                snapshot(other, b, cache_dir=tmp_path / "cache-b"),
            )
        finally:
            await other.close()
        assert {i.id for i in await repo.list_snapshots()} == {sa.snapshot_id, sb.snapshot_id}
        report = await check(repo, read_data=True)
        assert report.ok, report.problems
        await restore(repo, sa.snapshot_id, tmp_path / "out-a")
        await restore(repo, sb.snapshot_id, tmp_path / "out-b")
        same_tree(a, tmp_path / "out-a")
        same_tree(b, tmp_path / "out-b")
