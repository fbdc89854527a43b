"""Which snapshots a run or step event calls for: phase, tags, best effort, the version's volumes."""

from __future__ import annotations

from datetime import UTC, datetime

from rok_snapshotter.plan import plan_for
from rokcommon.events import (
    RunRef,
    RunStarted,
    SnapshotCompleted,
    SnapshotStatsModel,
    StepFinished,
    StepRef,
    StepStarted,
    VolumeRef,
)

RUN = RunRef(namespace="team-a", run_id="run-1", workflow_uid="wf-1")
STEP = StepRef(run=RUN, step_id="wf-1-123", name="train")
VOLUMES = (
    VolumeRef(name="workspace", role="workspace", path="/vol/ws"),
    VolumeRef(name="data", path="/vol/data"),
)
T = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_run_start_is_the_initial_snapshot_tagged_initial() -> None:
    event = RunStarted.make(run=RUN, run_name="r", pipeline_name="p", node="n1", volumes=VOLUMES, started_at=T)
    plan = plan_for(event)
    assert (plan.phase, plan.tags, plan.step, plan.run) == ("initial", ("initial",), None, RUN)
    assert plan.volume_names == ("workspace", "data")
    assert plan.best_effort  # the notebook keeps writing while it is taken


def test_a_step_start_is_the_before_snapshot_and_best_effort_without_a_guard() -> None:
    unguarded = plan_for(StepStarted.make(step=STEP, node="n1", volumes=VOLUMES, started_at=T))
    guarded = plan_for(StepStarted.make(step=STEP, node="n1", volumes=VOLUMES, guarded=True, started_at=T))
    assert (unguarded.phase, unguarded.tags, unguarded.step) == ("before", (), STEP)
    assert unguarded.best_effort and not guarded.best_effort


def test_a_failed_step_gets_its_after_snapshot_tagged_failed() -> None:
    def after(outcome: str) -> tuple[str, tuple[str, ...]]:
        plan = plan_for(StepFinished.make(step=STEP, node="n1", volumes=VOLUMES, outcome=outcome, finished_at=T))
        return plan.phase, plan.tags

    assert after("succeeded") == ("after", ())
    assert after("failed") == ("after", ("failed",))
    assert after("error") == ("after", ("failed",))


def test_the_record_key_is_the_id_of_the_snapshot_completed_event() -> None:
    plan = plan_for(StepStarted.make(step=STEP, node="n1", volumes=VOLUMES, started_at=T))
    completed = SnapshotCompleted.make(
        run=plan.run,
        step=plan.step,
        phase=plan.phase,
        volume=VOLUMES[1],
        volumes=plan.volume_names,
        node=plan.node,
        repository="file:///r",
        snapshot_id="s1",
        stats=SnapshotStatsModel(),
        taken_at=T,
    )
    assert plan.completed_id(VOLUMES[1]) == completed.event_id
    assert plan.completed_id(VOLUMES[0]) != completed.event_id


def test_the_store_snapshot_carries_what_identifies_it() -> None:
    plan = plan_for(StepFinished.make(step=STEP, node="n1", volumes=VOLUMES, outcome="failed", finished_at=T))
    tags = plan.store_tags(VOLUMES[0])
    assert tags["rok.run"] == "run-1" and tags["rok.step"] == "train" and tags["rok.phase"] == "after"
    assert tags["rok.volume"] == "workspace" and tags["rok.tags"] == "failed" and tags["rok.namespace"] == "team-a"
