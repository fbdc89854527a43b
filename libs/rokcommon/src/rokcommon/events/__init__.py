"""The events on the bus: one frozen pydantic model per subject (docs/events.md).

Every event has an ``event_id`` that is *deterministic*: publishing the same fact twice yields the same id, so
the stream's duplicate window (``Nats-Msg-Id``) drops the copy and every consumer can de-duplicate on it.
Each model's typed ``make`` constructor derives that id from the fact's identity: for the events about a
version (a step event, a snapshot's outcome, a commit) from its :class:`~rokcommon.versions.VersionKey`, which
each of them also returns as ``key``. ``schema_version`` is checked on decode: an event of a version this code
does not know is an :class:`~rokcommon.errors.InvalidEvent`.
"""

from __future__ import annotations

from rokcommon.errors import InvalidEvent
from rokcommon.events.base import SCHEMA_VERSION, Event, Model, Name, Outcome, Tag, invalid_event, now
from rokcommon.events.pipeline import RunFinished, RunStarted, StepFinished, StepStarted
from rokcommon.events.restores import (
    DirectoryTarget,
    NotebookTarget,
    PvcTarget,
    RestoreCompleted,
    RestoredVolume,
    RestoreFailed,
    RestoreProgress,
    RestoreRequested,
    RestoreTarget,
)
from rokcommon.events.snapshots import SnapshotCompleted, SnapshotFailed, VersionCommitted, completed_id
from rokcommon.events.values import (
    CHANGED_PATHS_BYTES,
    CHANGED_PATHS_LISTED,
    RunRef,
    SnapshotChanges,
    SnapshotStatsModel,
    StepRef,
    VolumeRef,
    version_key,
)
from rokcommon.versions import Phase, VersionKey, stable_id

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


__all__ = [
    "CHANGED_PATHS_BYTES",
    "CHANGED_PATHS_LISTED",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "DirectoryTarget",
    "Event",
    "Model",
    "Name",
    "NotebookTarget",
    "Outcome",
    "Phase",
    "PvcTarget",
    "RestoreCompleted",
    "RestoreFailed",
    "RestoreProgress",
    "RestoreRequested",
    "RestoreTarget",
    "RestoredVolume",
    "RunFinished",
    "RunRef",
    "RunStarted",
    "SnapshotChanges",
    "SnapshotCompleted",
    "SnapshotFailed",
    "SnapshotStatsModel",
    "StepFinished",
    "StepRef",
    "StepStarted",
    "Tag",
    "VersionCommitted",
    "VersionKey",
    "VolumeRef",
    "completed_id",
    "invalid_event",
    "model_for_subject",
    "now",
    "stable_id",
    "version_key",
]
