"""A step that fails and is tried again, through the real services: each attempt gets its own before and after
versions, from the step events through the snapshotter to the registry, and neither attempt's snapshot stands in
for the other's."""

from __future__ import annotations

from pathlib import Path

import pytest
from rokcommon.events import StepRef

from .system import PipelineRun, System

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def test_a_retried_steps_two_attempts_get_distinct_before_and_after_versions(
    shared_system: System, tmp_path: Path
) -> None:
    workspace, data = tmp_path / "workspace", tmp_path / "data"
    workspace.mkdir()
    data.mkdir()
    (workspace / "train.py").write_text("print('training')\n")
    run = PipelineRun(shared_system, {"workspace": workspace, "data": data})
    await run.begin()
    # Both attempts run on the same workflow node: only the attempt number tells them apart.
    first = StepRef(run=run.run, step_id=f"{run.run.workflow_uid}-train", name="train", attempt=0)
    second = first.model_copy(update={"attempt": 1})

    await shared_system.publish(run.step_started(first))
    first_before = await run.wait(first, "before")
    (workspace / "partial.bin").write_bytes(b"half a model")
    await shared_system.publish(run.step_finished(first, "failed"))
    first_after = await run.wait(first, "after")

    await shared_system.publish(run.step_started(second))
    second_before = await run.wait(second, "before")
    (workspace / "model.bin").write_bytes(b"a whole model")
    await shared_system.publish(run.step_finished(second))
    second_after = await run.wait(second, "after")
    await run.end()

    ids = [c.version_id for c in (first_before, first_after, second_before, second_after)]
    assert len(set(ids)) == 4, ids
    assert [c.step.attempt for c in (first_before, first_after, second_before, second_after) if c.step] == [0, 0, 1, 1]
    # each attempt's snapshots were taken for it, not replayed from the other attempt's records
    first_snapshots = {s.snapshot_id for s in shared_system.snapshots_of(run.run, first, "after")}
    second_snapshots = {s.snapshot_id for s in shared_system.snapshots_of(run.run, second, "after")}
    assert first_snapshots and second_snapshots and not first_snapshots & second_snapshots

    lineage = await shared_system.lineage(second_after)
    attempts = [(s.step_id, s.attempt) for s in lineage.steps]
    assert attempts == [(first.step_id, 0), (first.step_id, 1)]
    one, two = lineage.steps
    assert one.before and one.after and two.before and two.after
    assert [one.before.id, one.after.id, two.before.id, two.after.id] == ids
    assert "failed" in one.after.tags and "failed" not in two.after.tags
