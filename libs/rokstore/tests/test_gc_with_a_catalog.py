"""gc with a catalog of what is recorded (the registry, for ``rok repo gc --registry``): it removes the snapshots the
catalog forgot and the orphans older than the grace period, keeps a young orphan and everything a recorded
snapshot needs, reports the bytes it reclaimed, and removes nothing when the catalog cannot be believed or asked.
On a file store and on S3."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from rokcommon.errors import TemporaryError
from rokstore import Repository, check, collect_garbage, restore, snapshot
from rokstore.gc import UnknownCatalog

DAY = 86400.0


class Catalog:
    """What a registry would answer: these ids recorded, those forgotten; every question is kept."""

    def __init__(self, recorded: set[str], forgotten: set[str], *, fails: bool = False) -> None:
        self.recorded, self.forgotten, self.fails = recorded, forgotten, fails
        self.asked: list[list[str]] = []

    async def known(self, ids: Sequence[str]) -> tuple[set[str], set[str]]:
        self.asked.append(list(ids))
        if self.fails:
            raise TemporaryError("the registry did not answer snapshots within 30s")
        return self.recorded & set(ids), self.forgotten & set(ids)


@pytest.fixture
def age(repo_url: str, request: pytest.FixtureRequest) -> Callable[[str, float], None]:
    """Make the stored object ``key`` look written ``seconds`` ago (as a snapshotter that died long ago left it)."""
    if repo_url.startswith("file://"):
        root = Path(repo_url.removeprefix("file://"))
    else:
        bucket, _, prefix = repo_url.removeprefix("s3://").partition("/")
        root = request.getfixturevalue("s3_server").root / bucket / prefix

    def make_old(key: str, seconds: float) -> None:
        then = time.time() - seconds
        os.utime(root / key, (then, then))

    return make_old


def _volume(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


async def test_forgotten_and_old_orphaned_snapshots_go_and_every_recorded_one_still_restores(
    repo: Repository, tmp_path: Path, age: Callable[[str, float], None]
) -> None:
    shared, gone, lost, young = (os.urandom(n << 20) for n in (2, 3, 3, 1))
    forgotten = await snapshot(repo, _volume(tmp_path / "a", {"shared.bin": shared, "gone.bin": gone}))
    recorded = await snapshot(repo, _volume(tmp_path / "b", {"shared.bin": shared, "more.txt": b"kept\n"}))
    orphan = await snapshot(repo, _volume(tmp_path / "c", {"lost.bin": lost}))
    fresh = await snapshot(repo, _volume(tmp_path / "d", {"young.bin": young}))
    for sid in (forgotten.snapshot_id, recorded.snapshot_id, orphan.snapshot_id):
        age(f"snapshots/{sid}", 3 * DAY)
    age(f"snapshots/{fresh.snapshot_id}", 3600)  # an hour: perhaps its record is still on its way
    catalog = Catalog({recorded.snapshot_id}, {forgotten.snapshot_id})
    before = await repo.snapshot_ids()

    dry = await collect_garbage(repo, dry_run=True, catalog=catalog, orphan_grace=DAY)
    assert (dry.snapshots_forgotten, dry.orphans_removed, dry.orphans_kept) == (1, 1, 1)
    assert dry.bytes_freed > 6 << 20
    assert await repo.snapshot_ids() == before  # a dry run removes nothing

    report = await collect_garbage(repo, catalog=catalog, orphan_grace=DAY)
    assert catalog.asked[-1] == before  # asked about every stored snapshot, while holding the lock
    assert (report.snapshots_forgotten, report.orphans_removed, report.orphans_kept) == (1, 1, 1)
    assert report.bytes_freed == dry.bytes_freed and report.bytes_freed > 6 << 20  # gone.bin and lost.bin
    assert set(await repo.snapshot_ids()) == {recorded.snapshot_id, fresh.snapshot_id}
    assert report.snapshots == 2
    assert (await check(repo, read_data=True)).ok
    await restore(repo, recorded.snapshot_id, tmp_path / "out-b")
    assert (tmp_path / "out-b" / "shared.bin").read_bytes() == shared  # shared with the forgotten one: kept
    await restore(repo, fresh.snapshot_id, tmp_path / "out-d")
    assert (tmp_path / "out-d" / "young.bin").read_bytes() == young

    # with a grace period shorter than its age the young orphan goes too
    later = await collect_garbage(repo, catalog=catalog, orphan_grace=1800)
    assert (later.orphans_removed, later.orphans_kept) == (1, 0)
    assert await repo.snapshot_ids() == [recorded.snapshot_id]


async def test_nothing_goes_when_the_catalog_records_none_of_the_stores_snapshots_or_does_not_answer(
    repo: Repository, tmp_path: Path, age: Callable[[str, float], None]
) -> None:
    taken = [await snapshot(repo, _volume(tmp_path / f"v{i}", {"f.bin": os.urandom(1 << 20)})) for i in range(2)]
    for stats in taken:
        age(f"snapshots/{stats.snapshot_id}", 3 * DAY)
    before = await repo.snapshot_ids()
    with pytest.raises(UnknownCatalog, match="records none of the 2 snapshots"):
        await collect_garbage(repo, catalog=Catalog(set(), set()), orphan_grace=DAY)
    with pytest.raises(TemporaryError, match="did not answer"):
        await collect_garbage(repo, catalog=Catalog(set(), set(), fails=True), orphan_grace=DAY)
    assert await repo.snapshot_ids() == before
    assert await repo.backend.list("locks/") == []  # each gc let go of its lock
    assert (await collect_garbage(repo)).snapshots == 2  # without a catalog every snapshot stays
