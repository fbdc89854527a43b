"""What the lineage page says a step changed, from the after-snapshots' recorded summaries alone."""

from __future__ import annotations

from rok_registry.web.changes import step_changes
from rokcommon.events import SnapshotChanges
from rokcommon.registry_contract import Member


def member(volume: str, snapshot_id: str, changes: SnapshotChanges | None = None) -> Member:
    return Member(
        volume=volume, snapshot_id=snapshot_id, repository="s3://b/repo", url=f"rok://x/{volume}", changes=changes
    )


def test_a_summary_against_the_before_snapshot_is_shown_and_counts_what_it_does_not_list() -> None:
    summary = SnapshotChanges.between("b-ws", [f"f{i:03d}" for i in range(203)], [], [])
    (ws,) = step_changes([member("ws", "b-ws")], [member("ws", "a-ws", summary)])
    assert (ws.a, ws.b, ws.recorded, ws.unchanged, ws.more) == ("b-ws", "a-ws", True, False, 3)


def test_a_summary_against_another_snapshot_than_the_before_one_is_not_taken_for_the_steps_changes() -> None:
    in_between = SnapshotChanges.between("other", ["x"], [], [])
    (ws,) = step_changes([member("ws", "b-ws")], [member("ws", "a-ws", in_between)])
    assert not ws.recorded and ws.summary is None and not ws.unchanged


def test_an_empty_summary_is_unchanged_and_volumes_only_on_one_side_are_new_or_gone() -> None:
    empty = SnapshotChanges.between("b-data", [], [], [])
    changes = step_changes(
        [member("data", "b-data"), member("old", "b-old")], [member("data", "a-data", empty), member("new", "a-new")]
    )
    assert [(c.volume, c.a, c.b, c.unchanged) for c in changes] == [
        ("data", "b-data", "a-data", True),
        ("new", None, "a-new", False),
        ("old", "b-old", None, False),
    ]
