"""The snapshotter's settings: rok's common ones plus where this node's volumes are and how many to take at once.

What the snapshotter may read is settled here: in a cluster (``ROK_KUBE`` incluster or kubeconfig) only the
PVCs the kubelet mounted for a run's pod on this node, checked with the Kubernetes API; off a cluster only
directories under ``ROK_VOLUME_ROOTS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from rokcommon.settings import NodeName, RokSettings, node_name_default


class SnapshotterSettings(RokSettings):
    node_name: NodeName = Field(
        default_factory=node_name_default, description="this node's name (Kubernetes spec.nodeName)"
    )
    kubelet_pods_dir: Path = Field(
        Path("/var/lib/kubelet/pods"), description="the kubelet's pods directory, as mounted into this process"
    )
    kube: Literal["off", "incluster", "kubeconfig"] = Field(
        "off", description="where the Kubernetes API is: off (volumes are local directories), incluster, or kubeconfig"
    )
    kubeconfig: Path | None = Field(None, description="kubeconfig file (kube=kubeconfig); default ~/.kube/config")
    snapshot_concurrency: int = Field(2, ge=1, description="volume snapshots taken at once on this node")
    ack_wait: float = Field(
        60.0, gt=0, description="seconds JetStream waits for an ack (or progress) before redelivery"
    )
    progress_interval: float | None = Field(
        None, gt=0, description="seconds between progress reports to JetStream; default a quarter of ack_wait"
    )
    graceful_timeout: float = Field(100.0, gt=0, description="seconds in-flight snapshots get to finish on SIGTERM")
    cache_dir: Path | None = Field(None, description="node-local cache of unchanged files; default <state_dir>/cache")
    records_bucket: str = Field("rok-snapshots", description="NATS KV bucket remembering finished volume snapshots")

    @property
    def in_cluster(self) -> bool:
        return self.kube != "off"

    @property
    def roots(self) -> tuple[Path, ...]:
        """The directories a volume given by path may lie in. In a cluster no volume is given by path, and these
        are where a hostPath PV may lie: only those ``ROK_VOLUME_ROOTS`` names (host directories mounted into
        the snapshotter at the same path), none by default."""
        if self.in_cluster:
            return tuple(Path(r.strip()) for r in self.volume_roots.split(os.pathsep) if r.strip())
        return self.local_volume_roots

    @property
    def heartbeat_interval(self) -> float:
        return self.progress_interval or self.ack_wait / 4

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.state_dir / "cache"
