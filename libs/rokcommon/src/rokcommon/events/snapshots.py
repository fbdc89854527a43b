"""Snapshot outcomes (published by the snapshotter, one per volume) and version commits (by the registry)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import (
    AwareDatetime,
    Field,
)

from rokcommon import subjects
from rokcommon.events.base import Event, Name, NodeName, Tag
from rokcommon.events.values import RunRef, SnapshotChanges, SnapshotStatsModel, StepRef, VolumeRef, version_key
from rokcommon.versions import Phase, VersionKey


class SnapshotCompleted(Event):
    """One volume of a version is stored. ``step`` is None for the run's initial snapshot.

    ``volumes`` names every volume of the version (workspace first), so the registry knows when the version
    is whole without having seen the step event.
    """

    subject: ClassVar[str] = subjects.SNAPSHOT_COMPLETED
    run: RunRef
    step: StepRef | None = None
    phase: Phase
    tags: tuple[Tag, ...] = ()
    volume: VolumeRef
    volumes: tuple[str, ...] = Field(min_length=1)
    repository: str
    snapshot_id: Name
    stats: SnapshotStatsModel
    best_effort: bool = False
    node: NodeName
    taken_at: AwareDatetime
    changes: SnapshotChanges | None = None  # None: not computed (an older snapshotter, or the diff failed)

    @property
    def key(self) -> VersionKey:
        return version_key(self.run, self.step, self.phase)

    @classmethod
    def make(
        cls,
        *,
        run: RunRef,
        step: StepRef | None,
        phase: Phase,
        volume: VolumeRef,
        volumes: tuple[str, ...],
        node: str,
        repository: str,
        snapshot_id: str,
        stats: SnapshotStatsModel,
        taken_at: datetime,
        tags: tuple[Tag, ...] = (),
        best_effort: bool = False,
        changes: SnapshotChanges | None = None,
    ) -> SnapshotCompleted:
        return cls(
            event_id=completed_id(version_key(run, step, phase), volume.name),
            run=run,
            step=step,
            phase=phase,
            tags=tags,
            volume=volume,
            volumes=volumes,
            repository=repository,
            snapshot_id=snapshot_id,
            stats=stats,
            best_effort=best_effort,
            node=node,
            taken_at=taken_at,
            changes=changes,
        )


class SnapshotFailed(Event):
    subject: ClassVar[str] = subjects.SNAPSHOT_FAILED
    run: RunRef
    step: StepRef | None = None
    phase: Phase
    volume: VolumeRef
    volumes: tuple[str, ...] = Field(min_length=1)
    reason: str
    node: NodeName

    @property
    def key(self) -> VersionKey:
        return version_key(self.run, self.step, self.phase)

    @classmethod
    def make(
        cls,
        *,
        run: RunRef,
        step: StepRef | None,
        phase: Phase,
        volume: VolumeRef,
        volumes: tuple[str, ...],
        node: str,
        reason: str,
    ) -> SnapshotFailed:
        return cls(
            event_id=version_key(run, step, phase).event_id("snapshot failed", volume.name),
            run=run,
            step=step,
            phase=phase,
            volume=volume,
            volumes=volumes,
            reason=reason,
            node=node,
        )


def completed_id(key: VersionKey, volume: str) -> str:
    """The id of the ``SnapshotCompleted`` of one volume of a version (the snapshotter keeps its record by it)."""
    return key.event_id("snapshot completed", volume)


class VersionCommitted(Event):
    """The registry recorded every volume of a version: what a step guard and the local runner wait for."""

    subject: ClassVar[str] = subjects.VERSION_COMMITTED
    run: RunRef
    step: StepRef | None = None
    phase: Phase
    version_id: Name
    url: str
    tags: tuple[Tag, ...] = ()
    complete: bool = True  # False: some volume failed to snapshot

    @property
    def key(self) -> VersionKey:
        return version_key(self.run, self.step, self.phase)

    @classmethod
    def make(
        cls,
        *,
        run: RunRef,
        phase: Phase,
        url: str,
        step: StepRef | None = None,
        tags: tuple[Tag, ...] = (),
        complete: bool = True,
    ) -> VersionCommitted:
        """The commit of a version; its ``version_id`` is the key's."""
        key = version_key(run, step, phase)
        return cls(
            event_id=key.event_id("version committed"),
            run=run,
            step=step,
            phase=phase,
            version_id=key.version_id,
            url=url,
            tags=tags,
            complete=complete,
        )
