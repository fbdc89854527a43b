"""rok snapshotter: snapshots the volumes of this node's pipeline steps into the store."""

from rok_snapshotter.plan import SnapshotPlan, plan_for
from rok_snapshotter.settings import SnapshotterSettings
from rok_snapshotter.snapshots import SnapshotTaker
from rok_snapshotter.volumes import VolumeNotFound, kubelet_volume_path, locate

__all__ = [
    "SnapshotPlan",
    "SnapshotTaker",
    "SnapshotterSettings",
    "VolumeNotFound",
    "kubelet_volume_path",
    "locate",
    "plan_for",
]
