"""rok snapshotter: snapshots the volumes of this node's pipeline steps into the store."""

from rok_snapshotter.plan import SnapshotPlan, plan_for
from rok_snapshotter.settings import SnapshotterSettings
from rok_snapshotter.snapshots import SnapshotTaker, Volumes
from rok_snapshotter.volumes import LocalVolumes, UnsupportedVolume, VolumeNotFound, VolumeRefused

__all__ = [
    "LocalVolumes",
    "SnapshotPlan",
    "SnapshotTaker",
    "SnapshotterSettings",
    "UnsupportedVolume",
    "VolumeNotFound",
    "VolumeRefused",
    "Volumes",
    "plan_for",
]
