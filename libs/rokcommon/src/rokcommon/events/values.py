"""The values events carry: volumes, runs, steps, snapshot statistics and change summaries."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from rokcommon.events.base import _VOLUME_NAME, Model, Name
from rokcommon.versions import Phase, VersionKey


class VolumeRef(Model):
    """One volume a run or step uses. ``name`` is unique within the run; the workspace volume comes first.

    Locally ``path`` is the directory. In Kubernetes the volume is the claim ``pvc`` that the pod ``pod_name``
    (uid ``pod_uid``, in the run's namespace) mounts as its volume ``pod_volume``: the snapshotter checks all of
    that with the Kubernetes API and reads the volume where the kubelet mounted it for that pod. ``pv`` (the bound
    PersistentVolume) identifies the volume across pods, for the node-local cache. ``pod_name`` is optional in the
    contract (events from before it was added lack it), but a snapshotter in a cluster refuses a volume without it.
    """

    name: str
    role: Literal["workspace", "data"] = "data"
    path: str | None = None
    pvc: str | None = None
    pv: str | None = None
    pod_uid: str | None = None
    pod_name: str | None = None
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
CHANGED_PATHS_BYTES = 16 * 1024  # and at most this many bytes of paths per kind: an event stays far below max_payload


class SnapshotChanges(Model):
    """What a volume's snapshot changed relative to the volume's previous snapshot, bounded in size.

    ``parent`` is the previous snapshot of the same volume in the same repository, or None when none is known
    (the volume's first snapshot): then there is nothing to compare with and every count is 0. The counts are
    exact; ``added``/``removed``/``changed`` list at most the first :data:`CHANGED_PATHS_LISTED` paths of each
    kind (in path order), and no more than :data:`CHANGED_PATHS_BYTES` of them, however long the paths are;
    ``truncated`` says that some were left out.
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
            added=_listed(added, limit),
            removed=_listed(removed, limit),
            changed=_listed(changed, limit),
            truncated=any(len(_listed(paths, limit)) < len(paths) for paths in (added, removed, changed)),
        )

    @property
    def count(self) -> int:
        return self.added_count + self.removed_count + self.changed_count


def _listed(paths: list[str], limit: int) -> tuple[str, ...]:
    """The first paths, at most ``limit`` of them and :data:`CHANGED_PATHS_BYTES` in all."""
    out: list[str] = []
    used = 0
    for path in paths[:limit]:
        used += len(path.encode("utf-8", "surrogateescape"))
        if used > CHANGED_PATHS_BYTES:
            break
        out.append(path)
    return tuple(out)
