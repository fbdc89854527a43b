"""The events on the bus: one frozen pydantic model per subject (docs/events.md).

Every event has an ``event_id`` that is *deterministic*: publishing the same fact twice yields the same id, so
the stream's duplicate window (``Nats-Msg-Id``) drops the copy and every consumer can de-duplicate on it.
Each model's typed ``make`` constructor derives that id from the fact's identity: for the events about a
version (a step event, a snapshot's outcome, a commit) from its :class:`~rokcommon.versions.VersionKey`, which
each of them also returns as ``key``. ``schema_version`` is checked on decode: an event of a version this code
does not know is an :class:`~rokcommon.errors.InvalidEvent`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rokcommon import subjects
from rokcommon.errors import InvalidEvent, UnsupportedSchemaVersion
from rokcommon.versions import Phase, VersionKey, stable_id

SCHEMA_VERSION = 1

Name = Annotated[str, Field(min_length=1, max_length=253)]
Outcome = Literal["succeeded", "failed", "error"]
Tag = Literal["initial", "final", "failed"]

_VOLUME_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


def now() -> datetime:
    return datetime.now(UTC)


class Model(BaseModel):
    """Base of every value carried on the bus: immutable, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(Model):
    """Fields every event carries."""

    subject: ClassVar[str]
    event_id: Name
    occurred_at: AwareDatetime = Field(default_factory=now)
    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported (this build reads {SCHEMA_VERSION})")
        return value

    def subject_for(self) -> str:
        """The subject this event is published on (node-routed events add the node token)."""
        node = getattr(self, "node", None)
        if self.subject in subjects.NODE_ROUTED:
            assert isinstance(node, str)
            return subjects.for_node(self.subject, node)
        return self.subject

    @classmethod
    def decode(cls, data: bytes | str) -> Self:
        """Parse a payload, turning every way it can be wrong into :class:`InvalidEvent` naming the reason."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as error:
            raise invalid_event(cls, error) from error


def invalid_event(model: type[BaseModel], error: ValidationError) -> InvalidEvent:
    """An :class:`InvalidEvent` whose message names the model and each problem in one line."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in error.errors(include_url=False)
    )
    kind = UnsupportedSchemaVersion if any("schema_version" in e["loc"] for e in error.errors()) else InvalidEvent
    return kind(f"invalid {model.__name__}: {problems}")


# --- values carried inside events -------------------------------------------------------------------------


class VolumeRef(Model):
    """One volume a run or step uses. ``name`` is unique within the run; the workspace volume comes first.

    Locally ``path`` is the directory. In Kubernetes the snapshotter finds the volume under the kubelet's pods
    directory from ``pod_uid`` and ``pod_volume``; ``pv`` (the bound PersistentVolume) identifies the volume
    across pods, for the node-local cache.
    """

    name: str
    role: Literal["workspace", "data"] = "data"
    path: str | None = None
    pvc: str | None = None
    pv: str | None = None
    pod_uid: str | None = None
    pod_volume: str | None = None
    plugin: str | None = None  # kubelet volume plugin directory, e.g. "kubernetes.io~csi"

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _VOLUME_NAME.match(value):
            raise ValueError(f"volume name {value!r} must be 1-253 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        if value is not None and not PurePosixPath(value).is_absolute():
            raise ValueError(f"volume path {value!r} must be absolute")
        return value

    @model_validator(mode="after")
    def _locatable(self) -> Self:
        if self.path is None and not (self.pod_uid and self.pod_volume):
            raise ValueError(f"volume {self.name!r} needs a path, or a pod_uid and pod_volume")
        return self

    @property
    def cache_key(self) -> str:
        """What identifies this volume's content across snapshots: the PV in a cluster, the path locally."""
        return self.pv or self.path or f"{self.pod_uid}/{self.pod_volume}"


def _workspace_first(volumes: tuple[VolumeRef, ...]) -> tuple[VolumeRef, ...]:
    names = [v.name for v in volumes]
    if len(set(names)) != len(names):
        raise ValueError(f"volume names must be unique, got {names}")
    workspaces = [v for v in volumes if v.role == "workspace"]
    if len(workspaces) > 1:
        raise ValueError(f"at most one workspace volume, got {[v.name for v in workspaces]}")
    if workspaces and volumes[0].role != "workspace":
        raise ValueError("the workspace volume must come first")
    return volumes


Volumes = Annotated[tuple[VolumeRef, ...], AfterValidator(_workspace_first)]
"""The volumes of a run or step: unique names, at most one workspace, and the workspace first."""


class RunRef(Model):
    """Identifies a pipeline run everywhere: the KFP run id and the Argo workflow's uid."""

    namespace: Name
    run_id: Name
    workflow_uid: Name


class StepRef(Model):
    """One attempt of one step of a run. ``step_id`` is the workflow node id; ``name`` the task's name."""

    run: RunRef
    step_id: Name
    name: Name
    attempt: int = Field(default=0, ge=0)


def version_key(run: RunRef, step: StepRef | None, phase: Phase) -> VersionKey:
    """The key of the version of ``run`` at ``phase`` of ``step`` (``None``: the run's initial version)."""
    if step is None:
        return VersionKey(run.workflow_uid, phase)
    return VersionKey(run.workflow_uid, phase, step.step_id, step.attempt)


class SnapshotStatsModel(Model):
    """What a volume snapshot cost: mirrors the store engine's statistics."""

    files: int = 0
    bytes_scanned: int = 0
    bytes_read: int = 0
    bytes_new: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0
    incomplete: bool = False


CHANGED_PATHS_LISTED = 200  # paths a SnapshotChanges lists per kind; the rest are only counted


class SnapshotChanges(Model):
    """What a volume's snapshot changed relative to the volume's previous snapshot, bounded in size.

    ``parent`` is the previous snapshot of the same volume in the same repository, or None when none is known
    (the volume's first snapshot): then there is nothing to compare with and every count is 0. The counts are
    exact; ``added``/``removed``/``changed`` list at most the first :data:`CHANGED_PATHS_LISTED` paths of each
    kind (in path order), and ``truncated`` says that some were left out.
    """

    parent: str | None = None
    added_count: int = Field(default=0, ge=0)
    removed_count: int = Field(default=0, ge=0)
    changed_count: int = Field(default=0, ge=0)
    added: tuple[str, ...] = Field(default=(), max_length=CHANGED_PATHS_LISTED)
    removed: tuple[str, ...] = Field(default=(), max_length=CHANGED_PATHS_LISTED)
    changed: tuple[str, ...] = Field(default=(), max_length=CHANGED_PATHS_LISTED)
    truncated: bool = False

    @classmethod
    def between(
        cls, parent: str | None, added: list[str], removed: list[str], changed: list[str], *, limit: int = 0
    ) -> SnapshotChanges:
        """The summary of a full diff against ``parent``, listing at most ``limit`` (default: the bound) per kind."""
        limit = min(limit or CHANGED_PATHS_LISTED, CHANGED_PATHS_LISTED)
        return cls(
            parent=parent,
            added_count=len(added),
            removed_count=len(removed),
            changed_count=len(changed),
            added=tuple(added[:limit]),
            removed=tuple(removed[:limit]),
            changed=tuple(changed[:limit]),
            truncated=max(len(added), len(removed), len(changed)) > limit,
        )

    @property
    def count(self) -> int:
        return self.added_count + self.removed_count + self.changed_count


# --- run and step events (published by the pipeline-watcher) ----------------------------------------------


class RunStarted(Event):
    """A pipeline run started; the snapshotter on ``node`` snapshots the notebook's volumes (tag ``initial``)."""

    subject: ClassVar[str] = subjects.RUN_STARTED
    run: RunRef
    run_name: str
    pipeline_name: str
    pipeline_version: str | None = None
    experiment: str | None = None  # None: the KFP API could not be asked; the registry uses a fallback bucket
    node: Name
    volumes: Annotated[Volumes, Field(min_length=1)]
    started_at: AwareDatetime

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
        )


class RunFinished(Event):
    subject: ClassVar[str] = subjects.RUN_FINISHED
    run: RunRef
    outcome: Outcome
    finished_at: AwareDatetime

    @classmethod
    def make(cls, *, run: RunRef, outcome: Outcome, finished_at: datetime) -> RunFinished:
        return cls(
            event_id=stable_id(run.workflow_uid, "run finished"), run=run, outcome=outcome, finished_at=finished_at
        )


class _StepEvent(Event):
    """What the start and the end of a step share: the step, its node, its volumes and whether it is guarded.

    ``guarded`` says whether a step guard holds the step until its snapshot is committed; without one the
    snapshot is best effort and says so in its metadata.
    """

    _phase: ClassVar[Literal["before", "after"]]
    step: StepRef
    node: Name
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


# --- snapshot events (published by the snapshotter, one per volume) --------------------------------------


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
    node: Name
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
        )


class SnapshotFailed(Event):
    subject: ClassVar[str] = subjects.SNAPSHOT_FAILED
    run: RunRef
    step: StepRef | None = None
    phase: Phase
    volume: VolumeRef
    volumes: tuple[str, ...] = Field(min_length=1)
    reason: str
    node: Name

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


# --- restores ----------------------------------------------------------------------------------------------


class DirectoryTarget(Model):
    """Restore into a local directory: one sub-directory per volume, or the directory itself for one volume."""

    kind: Literal["directory"] = "directory"
    path: str

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not PurePosixPath(value).is_absolute():
            raise ValueError(f"target path {value!r} must be absolute")
        return value


def _dns_label(what: str, longest: int) -> AfterValidator:
    """A Kubernetes object name that must be a DNS label of at most ``longest`` characters."""

    def check(value: str) -> str:
        if len(value) > longest or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value):
            rule = "lower-case letters, digits and '-'"
            raise ValueError(f"{what} {value!r} must be a DNS label of at most {longest} characters ({rule})")
        return value

    return AfterValidator(check)


class PvcTarget(Model):
    """Restore one volume into a new PersistentVolumeClaim."""

    kind: Literal["pvc"] = "pvc"
    namespace: Name
    name: Annotated[str, _dns_label("PVC name", 63)]
    storage_class: str | None = None
    size: str | None = None  # a Kubernetes quantity; default: from the snapshot's size


class NotebookTarget(Model):
    """Restore a whole environment as a new Kubeflow notebook server (one PVC per volume, workspace first)."""

    kind: Literal["notebook"] = "notebook"
    namespace: Name
    name: Annotated[str, _dns_label("notebook name", 53)]
    image: str | None = None  # default: the image recorded with the run, else the platform default
    storage_class: str | None = None


RestoreTarget = Annotated[DirectoryTarget | PvcTarget | NotebookTarget, Field(discriminator="kind")]


class RestoreRequested(Event):
    """Restore a version (all its volumes, or those named) from a ``rok://`` URL, within ``namespace``."""

    subject: ClassVar[str] = subjects.RESTORE_REQUESTED
    request_id: Name
    namespace: Name
    url: str
    volumes: tuple[str, ...] = ()  # empty: every volume of the version (or the one the URL names)
    target: RestoreTarget
    requested_by: str | None = None

    @classmethod
    def make(
        cls,
        *,
        request_id: str,
        namespace: str,
        url: str,
        target: DirectoryTarget | PvcTarget | NotebookTarget,
        volumes: tuple[str, ...] = (),
        requested_by: str | None = None,
    ) -> RestoreRequested:
        return cls(
            event_id=stable_id("restore", request_id, "requested"),
            request_id=request_id,
            namespace=namespace,
            url=url,
            volumes=volumes,
            target=target,
            requested_by=requested_by,
        )


class RestoredVolume(Model):
    name: str
    snapshot_id: str
    location: str  # directory path, or namespace/pvc
    files: int
    bytes: int
    seconds: float


class RestoreCompleted(Event):
    subject: ClassVar[str] = subjects.RESTORE_COMPLETED
    request_id: Name
    namespace: Name
    url: str
    volumes: tuple[RestoredVolume, ...]
    seconds: float

    @classmethod
    def make(
        cls, *, request_id: str, namespace: str, url: str, volumes: tuple[RestoredVolume, ...], seconds: float
    ) -> RestoreCompleted:
        return cls(
            event_id=stable_id("restore", request_id, "completed"),
            request_id=request_id,
            namespace=namespace,
            url=url,
            volumes=volumes,
            seconds=seconds,
        )


class RestoreFailed(Event):
    subject: ClassVar[str] = subjects.RESTORE_FAILED
    request_id: Name
    namespace: Name
    url: str
    reason: str

    @classmethod
    def make(cls, *, request_id: str, namespace: str, url: str, reason: str) -> RestoreFailed:
        return cls(
            event_id=stable_id("restore", request_id, "failed"),
            request_id=request_id,
            namespace=namespace,
            url=url,
            reason=reason,
        )


class RestoreProgress(Model):
    """Progress of a restore, on core NATS at ``rok.restore.progress.v1.<request_id>`` (never stored)."""

    request_id: str
    volume: str
    bytes_done: int
    bytes_total: int
    files_done: int


EVENT_TYPES: tuple[type[Event], ...] = (
    RunStarted,
    RunFinished,
    StepStarted,
    StepFinished,
    SnapshotCompleted,
    SnapshotFailed,
    VersionCommitted,
    RestoreRequested,
    RestoreCompleted,
    RestoreFailed,
)

_BY_SUBJECT = {model.subject: model for model in EVENT_TYPES}


def model_for_subject(subject: str) -> type[Event]:
    """The event model a subject carries (node-routed subjects may end with a node token)."""
    base = ".".join(subject.split(".")[:4])
    try:
        return _BY_SUBJECT[base]
    except KeyError:
        raise InvalidEvent(f"no event is published on subject {subject!r}") from None
