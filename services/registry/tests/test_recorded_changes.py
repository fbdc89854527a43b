"""What each snapshot changed is recorded with its member and answered with it, without reading any store."""

from __future__ import annotations

import pytest
from registry_testkit import RunScript
from rok_registry.queries import Queries
from rok_registry.recorder import Recorder
from rokcommon.events import SnapshotChanges, SnapshotCompleted

NS = "team-a"


def with_changes(event: object) -> object:
    """The train step's after-snapshot of the workspace carries a summary against its before-snapshot."""
    if isinstance(event, SnapshotCompleted) and event.snapshot_id == "snap-wf-1-train-after-workspace":
        changes = SnapshotChanges.between(
            "snap-wf-1-train-before-workspace", ["model.json"], [], [f"log-{i:03d}" for i in range(205)]
        )
        return event.model_copy(update={"changes": changes})
    return event


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_snapshots_change_summary_is_recorded_with_its_member_and_returned_by_the_queries(
    recorder: Recorder, queries: Queries
) -> None:
    for event in RunScript().events():
        await recorder.record(with_changes(event))  # type: ignore[arg-type]
    [bucket] = await queries.list_buckets(NS)
    [run] = await queries.list_files(NS, bucket.name)
    lineage = await queries.lineage(NS, bucket.name, run.name)
    train = next(s for s in lineage.steps if s.name == "train")
    assert train.after is not None
    workspace, data = train.after.members
    assert workspace.changes is not None
    assert workspace.changes.parent == "snap-wf-1-train-before-workspace"
    assert (workspace.changes.added, workspace.changes.changed_count) == (("model.json",), 205)
    assert len(workspace.changes.changed) == 200 and workspace.changes.truncated
    assert data.changes is None  # sent without a summary (an older snapshotter): recorded as unknown
    resolved = await queries.resolve(NS, train.after.url)
    assert resolved.members[0].changes == workspace.changes
