"""What a snapshot changed since the volume's previous one: bounded, flagged when cut, none for a first snapshot."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from nats.js import JetStreamContext
from rok_snapshotter.changes import changes_since
from rok_snapshotter.main import build
from rok_snapshotter.repository import RepositoryHandle
from rok_snapshotter.settings import SnapshotterSettings
from rokcommon import bus
from rokcommon.events import (
    CHANGED_PATHS_BYTES,
    CHANGED_PATHS_LISTED,
    SnapshotChanges,
    SnapshotCompleted,
    StepFinished,
    VolumeRef,
)
from roktesting.nats import running
from snapshotter_helpers import NODE, settled, snapshot_events, started, step

DURABLE = "snapshotter-node-1_example_internal"


def test_a_summary_counts_every_path_but_lists_at_most_the_bound_and_says_it_was_cut() -> None:
    added = [f"new/{i:04d}" for i in range(CHANGED_PATHS_LISTED + 50)]
    summary = SnapshotChanges.between("parent-id", added, ["gone.txt"], [])
    assert summary.parent == "parent-id"
    assert (summary.added_count, summary.removed_count, summary.changed_count) == (250, 1, 0)
    assert summary.added == tuple(added[:CHANGED_PATHS_LISTED])
    assert summary.removed == ("gone.txt",)
    assert summary.truncated
    assert summary.count == 251


def test_a_summary_of_long_paths_lists_no_more_than_its_byte_bound_so_its_event_stays_small() -> None:
    deep = [f"{'d' * 250}/" * 15 + f"file-{i:03d}" for i in range(CHANGED_PATHS_LISTED)]  # ~3.8 KB each
    summary = SnapshotChanges.between("parent-id", deep, [], deep)
    assert (summary.added_count, summary.changed_count) == (CHANGED_PATHS_LISTED, CHANGED_PATHS_LISTED)
    listed = sum(len(p) for p in summary.added)
    assert 0 < listed <= CHANGED_PATHS_BYTES and summary.added == tuple(deep[: len(summary.added)])
    assert summary.truncated
    assert len(summary.model_dump_json()) < 3 * CHANGED_PATHS_BYTES  # all 200 would be 1.5 MB: over max_payload


def test_a_summary_within_the_bound_lists_everything_and_is_not_truncated() -> None:
    summary = SnapshotChanges.between("p", ["a"], [], ["b", "c"])
    assert (summary.added, summary.changed, summary.truncated) == (("a",), ("b", "c"), False)


async def test_the_summary_against_the_parent_comes_from_the_store_and_a_first_snapshot_has_no_parent(
    tmp_path: Path,
) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "keep.txt").write_text("same\n")
    (volume / "edit.txt").write_text("one\n")
    (volume / "drop.txt").write_text("bye\n")
    repo = RepositoryHandle((tmp_path / "repo").as_uri(), cache_dir=tmp_path / "cache")
    try:
        first = await repo.snapshot(volume, tags={}, cache_key=str(volume), progress=lambda _: None)
        (volume / "edit.txt").write_text("two, longer\n")
        (volume / "drop.txt").unlink()
        (volume / "add.txt").write_text("hello\n")
        second = await repo.snapshot(volume, tags={}, cache_key=str(volume), progress=lambda _: None)
        assert await changes_since(repo, None, first.snapshot_id) == SnapshotChanges(parent=None)
        summary = await changes_since(repo, first.snapshot_id, second.snapshot_id)
    finally:
        await repo.close()
    assert summary == SnapshotChanges(
        parent=first.snapshot_id,
        added_count=1,
        removed_count=1,
        changed_count=1,
        added=("add.txt",),
        removed=("drop.txt",),
        changed=("edit.txt",),
    )


async def test_each_snapshot_announces_what_changed_since_the_same_volumes_previous_snapshot(
    settings_for: Callable[..., SnapshotterSettings], js: JetStreamContext, tmp_path: Path
) -> None:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "notes.md").write_text("# notes\n")
    volume = VolumeRef(name="workspace", role="workspace", path=str(path))
    async with running(build(settings_for())):
        await bus.publish(js, started((volume,)))
        (before,) = await snapshot_events(js, 1)
        await settled(js, DURABLE)
        for i in range(CHANGED_PATHS_LISTED + 5):
            (path / f"out-{i:04d}.txt").write_text(str(i))
        finished = StepFinished.make(
            step=step(), node=NODE, volumes=(volume,), outcome="succeeded", finished_at=datetime.now(UTC)
        )
        await bus.publish(js, finished)
        both = await snapshot_events(js, 2)
    assert isinstance(before, SnapshotCompleted)
    after = next(e for e in both if isinstance(e, SnapshotCompleted) and e.phase == "after")
    assert before.changes == SnapshotChanges(parent=None)  # the volume's first snapshot
    assert after.changes is not None
    assert after.changes.parent == before.snapshot_id
    assert after.changes.added_count == CHANGED_PATHS_LISTED + 5
    assert after.changes.added == tuple(f"out-{i:04d}.txt" for i in range(CHANGED_PATHS_LISTED))
    assert after.changes.truncated
