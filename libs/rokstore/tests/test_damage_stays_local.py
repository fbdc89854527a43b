"""One bad index file, pack or record affects only the snapshots that need it, and each command names it."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rokstore import CorruptData, Repository, check, collect_garbage, open_repository, restore, snapshot
from rokstore.repository.index import index_key
from rokstore.repository.manifest import snapshot_key
from rokstore.repository.packs import pack_key

ROK = [sys.executable, "-c", "from rokcli import main; main()"]


def _other_tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "data.bin").write_bytes(random.Random(7).randbytes(600_000))
    (root / "readme").write_text("another volume\n")
    time.sleep(0.06)  # past the racy window, as in conftest.settle
    return root


async def _two_snapshots(repo: Repository, source: Path, tmp_path: Path) -> tuple[dict, dict]:
    a = await snapshot(repo, source)
    b = await snapshot(repo, _other_tree(tmp_path / "other"))
    return (
        {"id": a.snapshot_id, "index": (await repo.load_record(a.snapshot_id)).index},
        {"id": b.snapshot_id, "index": (await repo.load_record(b.snapshot_id)).index},
    )


async def test_a_damaged_index_file_affects_only_the_snapshots_that_need_it(
    repo: Repository, source: Path, tmp_path: Path, same_tree
) -> None:
    a, b = await _two_snapshots(repo, source, tmp_path)
    [a_index] = a["index"]
    data = await repo.backend.get(index_key(a_index))
    await repo.backend.put(index_key(a_index), data[: len(data) // 2])
    shutil.rmtree(os.environ["ROK_CACHE_DIR"] + "/index")  # as on a node that never read it while it was whole
    async with await open_repository(repo.url) as fresh:  # and in a process that never did either
        await _damaged_index_stays_local(fresh, source, a, b, a_index, tmp_path, same_tree)


async def _damaged_index_stays_local(
    repo: Repository, source: Path, a: dict, b: dict, a_index: str, tmp_path: Path, same_tree
) -> None:
    restored = await restore(repo, b["id"], tmp_path / "b")
    same_tree(tmp_path / "other", tmp_path / "b")
    assert [w for w in restored.warnings if a_index[:16] in w] == [
        f"skipped index file {a_index[:16]}: index file {a_index!r} does not match its BLAKE3 id; "
        "rebuild the index with 'rok repo repair-index'"
    ]
    with pytest.raises(CorruptData, match=f"in snapshot {a['id'][:12]} is not in any pack that exists"):
        await restore(repo, a["id"], tmp_path / "a")
    report = await check(repo)
    assert [p.object for p in report.problems if p.kind == "corrupt-index"] == [a_index]
    assert all(b["id"] not in p.snapshots for p in report.problems)
    assert any(a["id"] in p.snapshots for p in report.problems)
    packs_before = await repo.backend.list("packs/")
    with pytest.raises(CorruptData, match="repair-index"):
        await collect_garbage(repo)  # its packs would look like garbage: gc refuses rather than delete them
    assert await repo.backend.list("packs/") == packs_before

    again = await snapshot(repo, source)  # its chunks count as not stored: stored again, not referred to
    assert again.bytes_new > 0
    assert any(a_index[:16] in w for w in again.warnings)
    await restore(repo, again.snapshot_id, tmp_path / "again")
    same_tree(source, tmp_path / "again")
    await restore(repo, a["id"], tmp_path / "a")  # and the first snapshot of that tree is whole again


async def test_a_damaged_pack_affects_only_the_snapshots_that_need_it(
    repo: Repository, source: Path, tmp_path: Path, same_tree
) -> None:
    a, b = await _two_snapshots(repo, source, tmp_path)
    index = await repo.load_index()
    a_packs = set(index.files[a["index"][0]])
    for pack in a_packs:
        data = bytearray(await repo.backend.get(pack_key(pack)))
        data[len(data) // 3] ^= 0x55
        await repo.backend.put(pack_key(pack), bytes(data))
    await restore(repo, b["id"], tmp_path / "b")
    same_tree(tmp_path / "other", tmp_path / "b")
    with pytest.raises(CorruptData):
        await restore(repo, a["id"], tmp_path / "a")
    report = await check(repo, read_data=True)
    assert report.problems and all(p.snapshots in ([], [a["id"]]) for p in report.problems)


async def test_a_damaged_snapshot_record_is_skipped_by_the_listing_and_named(
    repo: Repository, source: Path, tmp_path: Path
) -> None:
    a, b = await _two_snapshots(repo, source, tmp_path)
    await repo.backend.put(snapshot_key(a["id"]), b'{"version": 1, "manif')
    infos, skipped = await repo.scan_snapshots()
    assert [i.id for i in infos] == [b["id"]]
    assert len(skipped) == 1 and skipped[0].startswith(f"skipped snapshot {a['id'][:16]}: ")
    assert [i.id for i in await repo.list_snapshots()] == [b["id"]]
    report = await check(repo)
    assert [p.snapshots for p in report.problems] == [[a["id"]]]


def test_snapshot_ls_lists_the_others_and_warns_once_per_bad_record(file_repo_url: str, source: Path) -> None:
    import asyncio

    from rokstore import init_repository

    async def prepare() -> tuple[dict, dict]:
        async with await init_repository(file_repo_url) as repo:
            a, b = await _two_snapshots(repo, source, source.parent)
            await repo.backend.put(snapshot_key(a["id"]), b"garbage")
            return a, b

    a, b = asyncio.run(prepare())
    listed = subprocess.run([*ROK, "snapshot", "ls", "--repo", file_repo_url, "--json"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert [i["id"] for i in json.loads(listed.stdout)] == [b["id"]]
    [warning] = listed.stderr.strip().splitlines()
    assert warning.startswith(f"warning: skipped snapshot {a['id'][:16]}: ")
