"""A lost pack never makes a new snapshot point at missing data, check names it, repair-index rebuilds the index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rokstore import CorruptData, Repository, check, repair_index, restore, snapshot
from rokstore.repository.index import encode_index, index_key

ROK = [sys.executable, "-c", "from rokcli import main; main()"]


async def _delete_packs(repo: Repository) -> list[str]:
    keys = [info.key for info in await repo.backend.list("packs/")]
    for key in keys:
        await repo.backend.delete(key)
    return keys


async def test_a_snapshot_after_its_packs_were_lost_stores_the_data_again_and_restores(
    repo: Repository, source: Path, tmp_path: Path, same_tree
) -> None:
    first = await snapshot(repo, source)
    lost = await _delete_packs(repo)
    assert lost

    # The same tree again, with the node-local cache that knows every file unchanged.
    second = await snapshot(repo, source)
    assert second.bytes_new == first.bytes_new  # every chunk stored again, not de-duplicated against lost packs
    assert second.bytes_uploaded > first.bytes_new // 2
    assert sum("is missing" in w and "repair-index" in w for w in second.warnings) == len(lost)
    await restore(repo, second.snapshot_id, tmp_path / "second")
    same_tree(source, tmp_path / "second")

    report = await check(repo)
    missing = [p for p in report.problems if p.kind == "missing-pack"]
    stored_again = {info.key for info in await repo.backend.list("packs/")}  # a pack written byte for byte again
    gone = {key.rsplit("/", 1)[-1] for key in lost if key not in stored_again}
    assert {p.object for p in missing} == gone
    assert all("index entries point at it" in p.message for p in missing)
    # The chunks are stored again, so no snapshot is affected by the dangling entries.
    assert all(p.snapshots == [] for p in missing)

    repaired = await repair_index(repo)
    # Packs are content-addressed: when the second snapshot packed its chunks as the first did (threads decide),
    # every lost pack is back under its name and the index already describes what exists.
    assert bool(repaired.entries_dropped) == bool(gone)
    assert repaired.index_files_removed >= (1 if gone else 0)
    after = await check(repo, read_data=True)
    assert after.ok, after.problems
    # The index no longer names the lost packs: a third snapshot finds everything stored.
    third = await snapshot(repo, source)
    assert third.bytes_new == 0 and third.warnings == []
    await restore(repo, first.snapshot_id, tmp_path / "first")  # same content: the first snapshot is whole again
    same_tree(source, tmp_path / "first")


async def test_a_restore_that_needs_a_lost_pack_names_the_file_and_leaves_nothing(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    stats = await snapshot(repo, source)
    await _delete_packs(repo)
    target = tmp_path / "out"
    with pytest.raises(
        CorruptData, match=r"of '(dir/big\.bin|small\.txt|dir/deeper/note\.md)' .* any pack that exists"
    ):
        await restore(repo, stats.snapshot_id, target)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if "rok-restore" in p.name] == []


async def test_repair_index_indexes_packs_no_index_names_and_replaces_damaged_index_files(
    repo: Repository, source: Path, tmp_path: Path, same_tree
) -> None:
    stats = await snapshot(repo, source)
    [index_file] = [info.key for info in await repo.backend.list("index/")]
    data = await repo.backend.get(index_file)
    await repo.backend.put(index_file, data[: len(data) // 2])  # truncated
    # An index file that names a pack that was never stored, next to the damaged one.
    _, dangling = encode_index([(b"\x01" * 32, [])])
    await repo.backend.put(index_key("0" * 64), dangling)

    broken = await check(repo)
    assert {p.kind for p in broken.problems} >= {"corrupt-index", "missing-chunk"}

    report = await repair_index(repo, read_all_packs=True)
    assert report.packs_read == report.packs > 0
    assert report.warnings == []
    assert [info.key for info in await repo.backend.list("index/")] == [index_key(report.index_written)]
    assert (await check(repo, read_data=True)).ok
    await restore(repo, stats.snapshot_id, tmp_path / "out")
    same_tree(source, tmp_path / "out")


async def test_repair_index_skips_a_pack_with_a_damaged_header_and_says_so(repo: Repository, source: Path) -> None:
    await snapshot(repo, source)
    for info in await repo.backend.list("index/"):
        await repo.backend.delete(info.key)
    packs = [info.key for info in await repo.backend.list("packs/")]
    damaged = packs[0]
    data = await repo.backend.get(damaged)
    await repo.backend.put(damaged, data[:-1] + b"X")  # the trailer's magic
    report = await repair_index(repo)
    assert len(report.warnings) == 1 and damaged.rsplit("/", 1)[-1][:16] in report.warnings[0]
    assert report.packs_read == len(packs)


def rok(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROK, *args], capture_output=True, text=True, timeout=60)


async def test_check_and_repair_index_on_the_command_line(file_repo_url: str, source: Path) -> None:
    from rokstore import init_repository

    async with await init_repository(file_repo_url) as repo:
        await snapshot(repo, source)
        lost = await _delete_packs(repo)  # the file data's and the trees'
    before = rok("repo", "check", "--repo", file_repo_url)
    assert before.returncode == 1
    for key in lost:
        assert f"problem: missing-pack: pack {key.rsplit('/', 1)[-1][:16]} is missing" in before.stdout
    repaired = rok("repo", "repair-index", "--repo", file_repo_url)
    assert repaired.returncode == 0, repaired.stderr
    assert "index rebuilt: 0 chunks in 0 packs" in repaired.stdout
    after = rok("repo", "check", "--repo", file_repo_url)
    # The index is consistent now; what the snapshot lost is named instead: its trees, which held the rest.
    assert "missing-pack" not in after.stdout and "missing-tree" in after.stdout
