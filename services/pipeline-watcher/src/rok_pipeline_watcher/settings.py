"""The pipeline-watcher's settings (``ROK_*`` environment variables) on top of rokcommon's."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from rokcommon.settings import NodeName, RokSettings, node_name_default


class WatcherSettings(RokSettings):
    kube: Literal["off", "incluster", "kubeconfig"] = Field(
        "off", description="where the Kubernetes API is: off (local runner only), incluster, or kubeconfig"
    )
    kubeconfig: Path | None = Field(None, description="kubeconfig file (kube=kubeconfig); default ~/.kube/config")
    watch_namespace: str = Field("", description="watch one namespace only; empty: all namespaces")
    watch_timeout: int = Field(300, ge=1, description="seconds one watch request lasts before it is renewed")
    kfp_api_url: str = Field(
        "http://ml-pipeline.kubeflow.svc.cluster.local:8888", description="the KFP API server, for experiments"
    )
    kfp_api_timeout: float = Field(5.0, gt=0, description="seconds to wait for the KFP API")
    kfp_api_token_file: Path | None = Field(
        None, description="bearer token for the KFP API (multi-user Kubeflow), e.g. a projected service account token"
    )
    leader_election: bool = Field(
        False, description="elect one watching replica with a Lease (several replicas in a cluster)"
    )
    lease_name: str = Field("rok-pipeline-watcher", description="the Lease replicas compete for")
    lease_namespace: str = Field("rok", description="namespace of the Lease (the watcher's own)")
    pod_name: str = Field(default_factory=node_name_default, description="this replica's identity in the Lease")
    webhook: bool = Field(False, description="serve the step guard's mutating admission webhook")
    webhook_host: str = Field("0.0.0.0", description="address the webhook listens on")
    webhook_port: int = Field(8443, description="HTTPS port of the webhook")
    webhook_cert: Path = Field(Path("/etc/rok/webhook/tls.crt"), description="TLS certificate of the webhook")
    webhook_key: Path = Field(Path("/etc/rok/webhook/tls.key"), description="TLS key of the webhook")
    guard_image: str = Field("rok-guard:latest", description="image of the step guard sidecar")
    guard_nats_password: SecretStr = Field(
        "", validate_default=True, description="NATS password the step guards connect with"
    )
    guard_before_timeout: float = Field(600.0, gt=0, description="seconds a step waits for its before-snapshot")
    guard_after_timeout: float = Field(600.0, gt=0, description="seconds a pod's end waits for its after-snapshot")
    clone_retention_hours: float = Field(
        24.0, ge=0, description="hours a run's clones are kept after the run finished (never while it runs)"
    )
    clone_sweep_seconds: float = Field(300.0, gt=0, description="seconds between two sweeps of the runs' clones")


class LocalRunSettings(RokSettings):
    """What ``rok run`` reads: it plays this machine's node, the one whose snapshotter takes the snapshots."""

    node_name: NodeName = Field(default_factory=node_name_default, description="this machine's node name")
