"""Run and step events, published by the pipeline-watcher (and by ``rok run`` on one machine)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    Field,
)

from rokcommon import subjects
from rokcommon.events.base import Event, NodeName, Outcome
from rokcommon.events.values import RunRef, StepRef, VolumeRef, Volumes
from rokcommon.notebooks import NotebookServer
from rokcommon.versions import VersionKey, stable_id


class RunStarted(Event):
    """A pipeline run started; the snapshotter on ``node`` snapshots the notebook's volumes (tag ``initial``)."""

    subject: ClassVar[str] = subjects.RUN_STARTED
    run: RunRef
    run_name: str
    pipeline_name: str
    pipeline_version: str | None = None
    experiment: str | None = None  # None: the KFP API could not be asked; the registry uses a fallback bucket
    node: NodeName
    volumes: Annotated[Volumes, Field(min_length=1)]
    started_at: AwareDatetime
    # the notebook server the run came from (its pod and PVCs, when the watcher found them): what a restore into
    # a new notebook server rebuilds
    notebook: NotebookServer | None = None

    @property
    def key(self) -> VersionKey:
        """The run's initial version, which this event asks for."""
        return VersionKey.initial(self.run.workflow_uid)

    @classmethod
    def make(
        cls,
        *,
        run: RunRef,
        run_name: str,
        pipeline_name: str,
        node: str,
        volumes: tuple[VolumeRef, ...],
        started_at: datetime,
        pipeline_version: str | None = None,
        experiment: str | None = None,
        notebook: NotebookServer | None = None,
    ) -> RunStarted:
        return cls(
            event_id=VersionKey.initial(run.workflow_uid).event_id("run started"),
            run=run,
            run_name=run_name,
            pipeline_name=pipeline_name,
            pipeline_version=pipeline_version,
            experiment=experiment,
            node=node,
            volumes=volumes,
            started_at=started_at,
            notebook=notebook,
        )


MetricName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class RunFinished(Event):
    """A run ended; ``metrics`` are the numbers its steps reported (a notebook's ``pipeline-metrics``)."""

    subject: ClassVar[str] = subjects.RUN_FINISHED
    run: RunRef
    outcome: Outcome
    finished_at: AwareDatetime
    metrics: Annotated[dict[MetricName, float], Field(max_length=64)] = {}

    @classmethod
    def make(
        cls, *, run: RunRef, outcome: Outcome, finished_at: datetime, metrics: dict[str, float] | None = None
    ) -> RunFinished:
        return cls(
            event_id=stable_id(run.workflow_uid, "run finished"),
            run=run,
            outcome=outcome,
            finished_at=finished_at,
            metrics=metrics or {},
        )


class _StepEvent(Event):
    """What the start and the end of a step share: the step, its node, its volumes and whether it is guarded.

    ``guarded`` says whether a step guard holds the step until its snapshot is committed; without one the
    snapshot is best effort and says so in its metadata.
    """

    _phase: ClassVar[Literal["before", "after"]]
    step: StepRef
    node: NodeName
    volumes: Volumes
    guarded: bool = False

    @property
    def key(self) -> VersionKey:
        """The version this event asks for: the step attempt's before (started) or after (finished) version."""
        return self.key_of(self.step)

    @classmethod
    def key_of(cls, step: StepRef) -> VersionKey:
        return VersionKey.of_step(step.run.workflow_uid, step.step_id, step.attempt, cls._phase)


class StepStarted(_StepEvent):
    """A step is about to run (or, without a step guard, has just started) on ``node``."""

    subject: ClassVar[str] = subjects.STEP_STARTED
    _phase: ClassVar[Literal["before", "after"]] = "before"
    started_at: AwareDatetime

    @classmethod
    def make(
        cls, *, step: StepRef, node: str, volumes: tuple[VolumeRef, ...], started_at: datetime, guarded: bool = False
    ) -> StepStarted:
        return cls(
            event_id=cls.key_of(step).event_id("step started"),
            step=step,
            node=node,
            volumes=volumes,
            guarded=guarded,
            started_at=started_at,
        )


class StepFinished(_StepEvent):
    """A step ended; its volumes are snapshotted once more (tag ``failed`` when it did not succeed)."""

    subject: ClassVar[str] = subjects.STEP_FINISHED
    _phase: ClassVar[Literal["before", "after"]] = "after"
    outcome: Outcome
    finished_at: AwareDatetime

    @classmethod
    def make(
        cls,
        *,
        step: StepRef,
        node: str,
        volumes: tuple[VolumeRef, ...],
        outcome: Outcome,
        finished_at: datetime,
        guarded: bool = False,
    ) -> StepFinished:
        return cls(
            event_id=cls.key_of(step).event_id("step finished"),
            step=step,
            node=node,
            volumes=volumes,
            guarded=guarded,
            outcome=outcome,
            finished_at=finished_at,
        )
