"""What an event asks for: which volumes to snapshot, in which phase, with which tags (pure code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from rokcommon.events import (
    Phase,
    RunRef,
    RunStarted,
    SnapshotChanges,
    SnapshotCompleted,
    SnapshotFailed,
    SnapshotStatsModel,
    StepFinished,
    StepRef,
    StepStarted,
    Tag,
    VolumeRef,
    completed_id,
    version_key,
)
from rokcommon.versions import VersionKey
from rokstore import SnapshotStats

NodeEvent: TypeAlias = RunStarted | StepStarted | StepFinished


@dataclass(frozen=True)
class SnapshotPlan:
    """The snapshots one run or step event calls for: one per volume, all of the same version."""

    event_id: str
    run: RunRef
    step: StepRef | None
    phase: Phase
    tags: tuple[Tag, ...]
    volumes: tuple[VolumeRef, ...]
    best_effort: bool
    node: str

    @property
    def volume_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.volumes)

    @property
    def key(self) -> VersionKey:
        """The version these snapshots make up."""
        return version_key(self.run, self.step, self.phase)

    def completed_id(self, volume: VolumeRef) -> str:
        """The event id the ``SnapshotCompleted`` of ``volume`` will carry: the key of its idempotency record."""
        return completed_id(self.key, volume.name)

    def completed(
        self,
        volume: VolumeRef,
        *,
        repository: str,
        snapshot_id: str,
        stats: SnapshotStatsModel,
        taken_at: datetime,
        changes: SnapshotChanges | None = None,
    ) -> SnapshotCompleted:
        """The announcement that ``volume`` is stored as ``snapshot_id`` (with what changed since its parent)."""
        return SnapshotCompleted.make(
            run=self.run,
            step=self.step,
            phase=self.phase,
            volume=volume,
            volumes=self.volume_names,
            node=self.node,
            tags=self.tags,
            repository=repository,
            snapshot_id=snapshot_id,
            stats=stats,
            best_effort=self.best_effort,
            taken_at=taken_at,
            changes=changes,
        )

    def failed(self, volume: VolumeRef, reason: str) -> SnapshotFailed:
        """The announcement that ``volume`` could not be snapshotted."""
        return SnapshotFailed.make(
            run=self.run,
            step=self.step,
            phase=self.phase,
            volume=volume,
            volumes=self.volume_names,
            node=self.node,
            reason=reason,
        )

    def store_tags(self, volume: VolumeRef) -> dict[str, str]:
        """What the snapshot records about itself in the store, so that it can be found without the registry."""
        tags = {
            "rok.namespace": self.run.namespace,
            "rok.run": self.run.run_id,
            "rok.workflow": self.run.workflow_uid,
            "rok.phase": self.phase,
            "rok.volume": volume.name,
            "rok.node": self.node,
            "rok.best_effort": str(self.best_effort).lower(),
        }
        if self.step is not None:
            tags |= {
                "rok.step": self.step.name,
                "rok.step_id": self.step.step_id,
                "rok.attempt": str(self.step.attempt),
            }
        if self.tags:
            tags["rok.tags"] = ",".join(self.tags)
        if volume.pvc:
            tags["rok.pvc"] = volume.pvc
        return tags


def plan_for(event: NodeEvent) -> SnapshotPlan:
    """``RunStarted`` → the initial snapshot; ``StepStarted`` → before; ``StepFinished`` → after (``failed``
    unless the step succeeded). A snapshot not held still by a step guard is best effort."""
    common: dict[str, Any] = {"event_id": event.event_id, "volumes": event.volumes, "node": event.node}
    if isinstance(event, RunStarted):
        return SnapshotPlan(run=event.run, step=None, phase="initial", tags=("initial",), best_effort=True, **common)
    best_effort = not event.guarded
    if isinstance(event, StepStarted):
        return SnapshotPlan(
            run=event.step.run, step=event.step, phase="before", tags=(), best_effort=best_effort, **common
        )
    tags: tuple[Tag, ...] = () if event.outcome == "succeeded" else ("failed",)
    return SnapshotPlan(
        run=event.step.run, step=event.step, phase="after", tags=tags, best_effort=best_effort, **common
    )


def stats_model(stats: SnapshotStats) -> SnapshotStatsModel:
    """The store engine's statistics as carried on the bus."""
    return SnapshotStatsModel(
        files=stats.files,
        bytes_scanned=stats.bytes_scanned,
        bytes_read=stats.bytes_read,
        bytes_new=stats.bytes_new,
        bytes_uploaded=stats.bytes_uploaded,
        seconds=stats.seconds,
        incomplete=stats.incomplete,
    )
