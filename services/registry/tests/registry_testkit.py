"""What the registry's tests share: the events of a whole run, and a registry to run against real parts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from rokcommon.events import (
    Event,
    Outcome,
    RunFinished,
    RunRef,
    RunStarted,
    SnapshotCompleted,
    SnapshotFailed,
    SnapshotStatsModel,
    StepFinished,
    StepRef,
    StepStarted,
    VolumeRef,
)

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
VOLUMES = (
    VolumeRef(name="workspace", role="workspace", path="/vol/workspace"),
    VolumeRef(name="data", role="data", path="/vol/data"),
)


class RunScript:
    """The events of one pipeline run, in the order they happen: ``run.events()``.

    ``steps`` names the steps in order; ``failed`` the one that fails (the run then fails too);
    ``snapshot_failures`` the (step, phase, volume) snapshots that fail.
    """

    def __init__(
        self,
        uid: str = "wf-1",
        *,
        namespace: str = "team-a",
        experiment: str | None = "Churn Model",
        run_name: str = "Nightly training",
        steps: tuple[str, ...] = ("prepare", "train", "evaluate"),
        failed: str | None = None,
        snapshot_failures: tuple[tuple[str | None, str, str], ...] = (),
        volumes: tuple[VolumeRef, ...] = VOLUMES,
    ) -> None:
        self.run = RunRef(namespace=namespace, run_id=f"run-{uid}", workflow_uid=uid)
        self.experiment = experiment
        self.run_name = run_name
        self.steps = steps
        self.failed = failed
        self.snapshot_failures = snapshot_failures
        self.volumes = volumes
        self.clock = T0

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=10)
        return self.clock

    def step(self, name: str, attempt: int = 0) -> StepRef:
        return StepRef(run=self.run, step_id=f"{self.run.workflow_uid}-{name}", name=name, attempt=attempt)

    def started(self) -> RunStarted:
        return RunStarted.make(
            run=self.run,
            run_name=self.run_name,
            pipeline_name="training-pipeline",
            pipeline_version="v3",
            experiment=self.experiment,
            node="node-a",
            volumes=self.volumes,
            started_at=T0,
        )

    def snapshots(self, step: StepRef | None, phase: str, at: datetime, tags: tuple[str, ...] = ()) -> list[Event]:
        events: list[Event] = []
        names = tuple(v.name for v in self.volumes)
        for i, volume in enumerate(self.volumes):
            common: dict[str, Any] = {
                "run": self.run,
                "step": step,
                "phase": phase,
                "volume": volume,
                "volumes": names,
                "node": "node-a",
            }
            if (step.name if step else None, phase, volume.name) in self.snapshot_failures:
                events.append(SnapshotFailed.make(reason="disk read error", **common))
                continue
            key = f"{step.step_id if step else 'initial'}-{phase}-{volume.name}"
            events.append(
                SnapshotCompleted.make(
                    tags=tags,
                    repository="file:///repo",
                    snapshot_id=f"snap-{key}",
                    stats=SnapshotStatsModel(files=3, bytes_scanned=1000 * (i + 1), bytes_new=100 * (i + 1)),
                    taken_at=at + timedelta(seconds=1 + i),
                    **common,
                )
            )
        return events

    def events(self) -> list[Event]:
        events: list[Event] = [self.started(), *self.snapshots(None, "initial", T0)]
        for name in self.steps:
            step = self.step(name)
            started = self.tick()
            events.append(StepStarted.make(step=step, node="node-a", volumes=self.volumes, started_at=started))
            events += self.snapshots(step, "before", started)
            finished = self.tick()
            outcome: Outcome = "failed" if name == self.failed else "succeeded"
            events.append(
                StepFinished.make(step=step, node="node-a", volumes=self.volumes, outcome=outcome, finished_at=finished)
            )
            events += self.snapshots(step, "after", finished, tags=("failed",) if outcome == "failed" else ())
            if outcome == "failed":
                break
        outcome = "failed" if self.failed else "succeeded"
        events.append(RunFinished.make(run=self.run, outcome=outcome, finished_at=self.tick()))
        return events


R = TypeVar("R")


async def eventually(probe: Callable[[], Awaitable[R]], *, timeout: float = 15.0) -> R:
    """Ask ``probe`` until it returns something true (or raises no more), then return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = await probe()
            if result:
                return result
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{probe} stayed false for {timeout}s")
        await asyncio.sleep(0.05)
