"""Restore requests, their targets, progress and outcomes."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
)

from rokcommon import subjects
from rokcommon.events.base import Event, Model, Name
from rokcommon.versions import stable_id


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


Quantity = Annotated[str, AfterValidator(lambda v: _quantity(v))]
AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]


def _quantity(value: str) -> str:
    """A storage size as Kubernetes writes it (``10Gi``, ``500M``, ``1073741824``)."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?", value):
        raise ValueError(f"size {value!r} is not a Kubernetes quantity (such as 10Gi, 500Mi or 2G)")
    return value


# on a run's clone of a notebook volume (``rok clone-pvc``): the KFP run id that owns it, which retention follows
RUN_LABEL = "rok.kubeflow.org/run"
RunLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")]


class PvcTarget(Model):
    """Restore one volume into a new PersistentVolumeClaim.

    Size, storage class and access mode default to the original claim's (recorded with the run), else to the
    data's size with headroom; a size smaller than the data is refused."""

    kind: Literal["pvc"] = "pvc"
    namespace: Name
    name: Annotated[str, _dns_label("PVC name", 63)]
    storage_class: str | None = None
    size: Quantity | None = None
    access_mode: AccessMode | None = None
    run_id: RunLabel | None = None  # a run's clone: the run it belongs to (label RUN_LABEL on the PVC)


class NotebookTarget(Model):
    """Restore a whole environment as a new Kubeflow notebook server (one PVC per volume, workspace first)."""

    kind: Literal["notebook"] = "notebook"
    namespace: Name
    name: Annotated[str, _dns_label("notebook name", 53)]
    image: str | None = None  # default: the image recorded with the run, else the platform default
    storage_class: str | None = None
    sizes: dict[str, Quantity] = Field(default_factory=dict)  # volume → size of its new PVC; default as PvcTarget


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
    devices: bool = False  # create the snapshot's device files (a directory target, as root); skipped otherwise
    keep_setuid: bool = False  # keep the set-uid/set-gid bits of files (a directory target); cleared otherwise

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
        devices: bool = False,
        keep_setuid: bool = False,
    ) -> RestoreRequested:
        return cls(
            event_id=stable_id("restore", request_id, "requested"),
            request_id=request_id,
            namespace=namespace,
            url=url,
            volumes=volumes,
            target=target,
            requested_by=requested_by,
            devices=devices,
            keep_setuid=keep_setuid,
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
