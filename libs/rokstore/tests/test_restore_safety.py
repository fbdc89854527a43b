"""Restore never writes outside its target, refuses non-empty targets and verifies every chunk."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from rokstore import CorruptData, Repository, SnapshotNotFound, TargetNotEmpty, UnsafePath, check, restore, snapshot
from rokstore.repository.manifest import Entry

ROOT = {"p": ".", "t": "d", "m": 0o755, "u": 0, "g": 0, "mt": 0}


def _file(path: str) -> dict:
    return {"p": path, "t": "f", "m": 0o644, "u": 0, "g": 0, "mt": 0, "s": 0, "c": []}


@pytest.mark.parametrize(
    "entries",
    [
        [ROOT, _file("../escaped")],
        [ROOT, {"p": "d", "t": "d", "m": 0o755, "u": 0, "g": 0, "mt": 0}, _file("d/../../escaped")],
        [ROOT, _file("/tmp/escaped-absolute")],
        [ROOT, {"p": "d", "t": "l", "m": 0o777, "u": 0, "g": 0, "mt": 0, "l": "{outside}"}, _file("d/escaped")],
        [ROOT, _file("a"), {"p": "a", "t": "l", "m": 0o777, "u": 0, "g": 0, "mt": 0, "l": "{outside}"}],
        [ROOT, {"p": "h", "t": "h", "m": 0o644, "u": 0, "g": 0, "mt": 0, "h": "../escaped"}],
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "file-under-symlink", "duplicate-path", "hardlink-outside"],
)
async def test_hand_crafted_trees_cannot_write_outside_target(
    file_repo_url: str, tmp_path: Path, entries: list[dict], forge: Callable[[Repository, list[dict]], Awaitable[str]]
) -> None:
    from rokstore import init_repository

    outside = tmp_path / "outside"
    outside.mkdir()
    entries = json.loads(json.dumps(entries).replace("{outside}", str(outside)))
    async with await init_repository(file_repo_url) as repo:
        snapshot_id = await forge(repo, entries)
        target = tmp_path / "target" / "inner"
        with pytest.raises(UnsafePath):
            await restore(repo, snapshot_id, target)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "target" / "escaped").exists()
    assert not Path("/tmp/escaped-absolute").exists()


async def test_non_empty_target_is_refused(repo: Repository, source: Path, tmp_path: Path) -> None:
    stats = await snapshot(repo, source)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "precious").write_text("keep me")
    with pytest.raises(TargetNotEmpty, match="not empty"):
        await restore(repo, stats.snapshot_id, target)
    assert (target / "precious").read_text() == "keep me"
    assert sorted(p.name for p in target.iterdir()) == ["precious"]


async def test_unknown_or_ambiguous_snapshot_id_is_a_clear_error(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    await snapshot(repo, source)
    with pytest.raises(SnapshotNotFound, match="no snapshot 'deadbeef'"):
        await restore(repo, "deadbeef", tmp_path / "out")
    with pytest.raises(SnapshotNotFound, match="at least 8"):
        await restore(repo, "abc", tmp_path / "out")


async def _corrupt_one_pack(repo: Repository) -> None:
    """Flip a byte inside the first blob of the largest pack (rewrite the object in place)."""
    infos = sorted(await repo.backend.list("packs/"), key=lambda i: i.size)
    key = infos[-1].key
    data = bytearray(await repo.backend.get(key))
    data[100] ^= 0xFF
    await repo.backend.put(key, bytes(data))


async def test_corrupted_chunk_fails_restore_and_is_found_by_check_read_data(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    stats = await snapshot(repo, source)
    assert (await check(repo, read_data=True)).ok
    await _corrupt_one_pack(repo)
    with pytest.raises(CorruptData, match="does not match its BLAKE3 id"):
        await restore(repo, stats.snapshot_id, tmp_path / "out")
    structure = await check(repo)
    assert structure.ok  # the structure is intact; only reading the bytes finds the damage
    report = await check(repo, read_data=True)
    assert not report.ok
    assert [p.kind for p in report.problems] == ["corrupt-chunk"]
    assert report.problems[0].snapshots == [stats.snapshot_id]


async def test_check_names_snapshots_that_lost_a_pack(repo: Repository, source: Path, tmp_path: Path) -> None:
    first = await snapshot(repo, source)
    other = tmp_path / "other"
    other.mkdir()
    (other / "unrelated.txt").write_text("unrelated")
    second = await snapshot(repo, other)
    packs = await repo.backend.list("packs/")
    index = await repo.load_index()
    big_pack = index.chunks[bytes.fromhex(_first_chunk(await _entries(repo, first.snapshot_id), "dir/big.bin"))].pack
    await repo.backend.delete(next(i.key for i in packs if i.key.endswith(big_pack.hex())))
    report = await check(repo)
    assert not report.ok
    missing = [p for p in report.problems if p.kind == "missing-pack"]
    assert missing and missing[0].snapshots == [first.snapshot_id]
    assert second.snapshot_id not in missing[0].snapshots


async def test_check_finds_snapshots_whose_blobs_are_in_no_index(repo: Repository, source: Path) -> None:
    stats = await snapshot(repo, source)
    for info in await repo.backend.list("index/"):
        await repo.backend.delete(info.key)
    report = await check(repo)
    assert [p.kind for p in report.problems] == ["missing-tree"]  # without an index, not even its trees are found
    assert report.problems[0].snapshots == [stats.snapshot_id]


async def _entries(repo: Repository, snapshot_id: str) -> list[Entry]:
    return await repo.load_entries(await repo.load_record(snapshot_id))


def _first_chunk(entries: list[Entry], path: str) -> str:
    content = next(e for e in entries if e.path == path).content
    assert content is not None
    return str(content[0][0])
