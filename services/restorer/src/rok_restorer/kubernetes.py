"""Restores into Kubernetes: a new PVC, or a new Kubeflow notebook server (one PVC per volume, workspace first).

This module is the lifecycle, through the ``kubernetes`` client. A new PVC is ready — bound, filled, verified —
before anything can mount it, because it does not exist until then:

1. it checks that no claim or notebook of the names to be created exists, and creates for each volume a
   *staging* claim (``rok-staging-<claim>``, the requested spec);
2. for each volume a restore pod (on a node that runs a snapshotter) and the Secret it reads the object store's
   credentials from fill the staging claim with the store engine's verified restore; the pod's termination
   message is the restore's statistics;
3. the filled PersistentVolume is handed over, as Kubernetes' volume populators do it: the volume is reserved
   for the new claim (its ``claimRef`` names it, its reclaim policy is ``Retain`` meanwhile), the staging claim
   is deleted, the new claim is created bound to that volume (``spec.volumeName``), and once it is ``Bound`` the
   volume's own reclaim policy is given back;
4. for a notebook target, once every volume is handed over, it creates the ``Notebook``.

On failure :meth:`KubernetesTarget.discard` removes what it made, and only objects that carry the restorer's
label. What the objects are is :mod:`rok_restorer.manifests`.

The Kubernetes calls here are exactly what the restorer's ClusterRole grants (deploy/base/restorer/rbac.yaml;
tests/deploy/test_rbac.py compares the two).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rokcommon.errors import PermanentError, TemporaryError
from rokcommon.events import NotebookTarget, PvcTarget, RestoredVolume
from rokcommon.events.restores import RUN_LABEL
from rokcommon.kube import api_client
from rokcommon.notebooks import NotebookServer

from rok_restorer.manifests import (
    MANAGED_BY,
    NOTEBOOK_GROUP,
    NOTEBOOK_VERSION,
    NOTEBOOKS,
    RECLAIM_ANNOTATION,
    SNAPSHOT_ANNOTATION,
    claim_manifest,
    claim_names,
    credentials_secret_manifest,
    handed_over_claim_manifest,
    is_ours,
    notebook_manifest,
    reserved_for,
    restore_pod_manifest,
    restore_pod_name,
    staging_claim_manifest,
    staging_claim_name,
)
from rok_restorer.targets import RestoreInto, Target, TargetFactory, VolumeToRestore

__all__ = ["MANAGED_BY", "KubernetesSettings", "KubernetesTarget", "KubernetesTargets", "kubernetes_targets"]

log = logging.getLogger(__name__)


class KubernetesSettings(BaseSettings):
    """The restorer's Kubernetes side (``ROK_*`` environment variables)."""

    model_config = SettingsConfigDict(env_prefix="ROK_", extra="ignore", frozen=True)

    kube: Literal["off", "incluster", "kubeconfig"] = Field(
        "off", description="where the Kubernetes API is: off (no PVC or notebook targets), incluster, or kubeconfig"
    )
    kubeconfig: Path | None = Field(None, description="kubeconfig file (kube=kubeconfig); default ~/.kube/config")
    restore_image: str = Field("rok/restorer:latest", description="image of the restore pods (the restorer's own)")
    notebook_image: str = Field(
        "kubeflownotebookswg/jupyter-scipy:v1.8.0",
        description="image of a restored notebook server when the request names none",
    )
    snapshotter_namespace: str = Field("rok", description="namespace of the snapshotter pods")
    snapshotter_selector: str = Field(
        "app.kubernetes.io/name=rok-snapshotter", description="label selector of the snapshotter pods"
    )
    restore_pod_timeout: float = Field(3600.0, gt=0, description="seconds a restore pod may take, scheduling included")
    restore_poll_interval: float = Field(2.0, gt=0, description="seconds between two looks at a restore pod")
    restore_volume_size: str = Field("10Gi", description="size of a restored PVC when the snapshot's size is unknown")


def kubernetes_targets(settings: object = None) -> TargetFactory | None:
    """The factory of PVC and notebook targets, or None when no cluster is configured (``ROK_KUBE=off``)."""
    kube = KubernetesSettings()
    if kube.kube == "off":
        return None
    return KubernetesTargets(api_client(kube.kube, kube.kubeconfig), kube)


class KubernetesTargets:
    """Makes the :class:`KubernetesTarget` of one request."""

    def __init__(self, api_client: client.ApiClient, settings: KubernetesSettings) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.settings = settings

    def __call__(
        self,
        model: PvcTarget | NotebookTarget,
        volumes: Sequence[VolumeToRestore],
        notebook: NotebookServer | None = None,
    ) -> Target:
        return KubernetesTarget(self, model, volumes, notebook)


class KubernetesTarget:
    """One request's PVCs (and notebook): claimed, filled by restore pods, discarded on failure."""

    def __init__(
        self,
        targets: KubernetesTargets,
        model: PvcTarget | NotebookTarget,
        volumes: Sequence[VolumeToRestore],
        notebook: NotebookServer | None = None,
    ) -> None:
        self.core, self.custom, self.settings = targets.core, targets.custom, targets.settings
        self.model = model
        self.notebook = notebook
        self.namespace = model.namespace
        self.volumes = list(volumes)
        self.claims = dict(zip((v.name for v in self.volumes), claim_names(model, self.volumes), strict=True))
        self.nodes: list[str] = []
        self.targets: dict[str, dict[str, Any]] = {}  # volume → the manifest of its new PVC
        self._restored: set[str] = set()
        self._made: set[str] = set()  # volumes whose PVC a retried clone task's earlier request already made
        self._lock = asyncio.Lock()

    # --- the Target contract -------------------------------------------------------------------------------

    async def claim(self) -> None:
        await _call(self._claim)

    async def restore_volume(self, volume: VolumeToRestore, into_directory: RestoreInto) -> RestoredVolume:
        restored = await _call(self._restore, volume)
        async with self._lock:
            self._restored.add(volume.name)
            if isinstance(self.model, NotebookTarget) and self._restored == set(self.claims):
                await _call(self._create_notebook)
        return restored

    async def discard(self) -> None:
        await _call(self._discard)

    # --- claiming ------------------------------------------------------------------------------------------

    def _claim(self) -> None:
        if isinstance(self.model, NotebookTarget) and self._read_notebook() is not None:
            raise PermanentError(
                f"a notebook server {self.namespace}/{self.model.name} already exists; choose another name"
            )
        for claim in self.claims.values():
            staged = self._read_claim(staging_claim_name(claim))
            if staged is not None:
                raise TemporaryError(f"a restore into PVC {self.namespace}/{claim} is under way", delay=10.0)
            existing = self._read_claim(claim)
            if existing is None:
                continue
            if existing["metadata"].get("deletionTimestamp"):
                raise TemporaryError(f"PVC {self.namespace}/{claim} is still being deleted", delay=5.0)
            volume = next(v for v in self.volumes if self.claims[v.name] == claim)
            if not self._made_before(existing, volume):
                raise PermanentError(f"PVC {self.namespace}/{claim} already exists; restore into a new PVC name")
            if (existing.get("status") or {}).get("phase") != "Bound":
                raise TemporaryError(f"PVC {self.namespace}/{claim} is being handed its volume", delay=5.0)
            self._made.add(volume.name)
            log.info("PVC %s/%s is this run's clone already (a retried task): left as it is", self.namespace, claim)
        if self._made == set(self.claims):
            return
        self.nodes = self._snapshotter_nodes()
        for volume in self.volumes:
            if volume.name in self._made:
                continue
            manifest = claim_manifest(self.model, volume, self.claims[volume.name], self.settings.restore_volume_size)
            self.targets[volume.name] = manifest
            self.core.create_namespaced_persistent_volume_claim(
                self.namespace, _model(client.V1PersistentVolumeClaim, staging_claim_manifest(manifest))
            )
            log.info(
                "created the staging PVC of %s/%s (volume %s)",
                self.namespace,
                manifest["metadata"]["name"],
                volume.name,
            )

    def _snapshotter_nodes(self) -> list[str]:
        pods = self.core.list_namespaced_pod(
            self.settings.snapshotter_namespace, label_selector=self.settings.snapshotter_selector
        )
        nodes = sorted(
            {
                p.spec.node_name
                for p in pods.items
                if p.spec and p.spec.node_name and p.status and p.status.phase == "Running"
            }
        )
        if not nodes:
            raise TemporaryError(
                f"no snapshotter is running (pods {self.settings.snapshotter_selector!r} in namespace "
                f"{self.settings.snapshotter_namespace!r}): a restore pod must run beside one",
                delay=10.0,
            )
        return nodes

    def _made_before(self, existing: dict[str, Any], volume: VolumeToRestore) -> bool:
        """Whether ``existing`` is the PVC this request asks for, made by an earlier request of the same run: the
        run's clone, restored by rok from the same snapshot (a create-volume task retried after it succeeded)."""
        if not isinstance(self.model, PvcTarget) or not self.model.run_id:
            return False
        meta = existing["metadata"]
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        if not is_ours(labels) or labels.get(RUN_LABEL) != self.model.run_id:
            return False
        return bool(annotations.get(SNAPSHOT_ANNOTATION) == volume.snapshot_id)

    # --- restoring one volume ------------------------------------------------------------------------------

    def pod_name(self, volume: VolumeToRestore) -> str:
        return restore_pod_name(self.claims[volume.name])

    def _restore(self, volume: VolumeToRestore) -> RestoredVolume:
        if volume.name in self._made:  # nothing written: the PVC holds this snapshot already
            location = f"{self.namespace}/{self.claims[volume.name]}"
            return RestoredVolume(
                name=volume.name, snapshot_id=volume.snapshot_id, location=location, files=0, bytes=0, seconds=0.0
            )
        if not volume.repository.startswith("s3://"):
            raise PermanentError(
                f"volume {volume.name!r} is stored in {volume.repository}, which a pod in the cluster cannot "
                "read; restore it into a directory instead"
            )
        name = self.pod_name(volume)
        self._delete_pod(name)  # a pod left by an interrupted attempt
        manifest = restore_pod_manifest(
            self.namespace,
            volume,
            staging_claim_name(self.claims[volume.name]),
            nodes=self.nodes,
            image=self.settings.restore_image,
            timeout=self.settings.restore_pod_timeout,
            name=name,
        )
        pod = self.core.create_namespaced_pod(self.namespace, _model(client.V1Pod, manifest))
        try:
            assert pod.metadata is not None
            secret = credentials_secret_manifest(self.namespace, pod.metadata.name, pod.metadata.uid, os.environ)
            self.core.create_namespaced_secret(self.namespace, _model(client.V1Secret, secret))
            phase, message = self._wait(name)
        finally:
            self._delete_pod(name)
        location = f"{self.namespace}/{self.claims[volume.name]}"
        if phase != "Succeeded":
            if "corrupt" in message.lower():
                raise PermanentError(f"restoring {location}: {message}")
            raise TemporaryError(f"the restore pod {self.namespace}/{name} failed: {message or phase}")
        try:
            stats = json.loads(message.strip().splitlines()[-1])
        except (ValueError, IndexError) as error:
            raise TemporaryError(f"the restore pod {self.namespace}/{name} said {message!r}") from error
        self._hand_over(volume)
        return RestoredVolume(
            name=volume.name,
            snapshot_id=stats["snapshot_id"],
            location=location,
            files=stats["files"],
            bytes=stats["bytes"],
            seconds=stats["seconds"],
        )

    # --- handing the filled volume over to the new claim -----------------------------------------------------

    def _hand_over(self, volume: VolumeToRestore) -> None:
        """Bind the new claim to the volume its staging claim holds (filled and verified), then drop the staging
        claim: the new claim is never seen unbound or empty."""
        claim = self.claims[volume.name]
        staging = staging_claim_name(claim)
        staged = self._read_claim(staging)
        bound = self._read_claim(claim)
        if staged is None and bound is not None and is_ours(bound["metadata"].get("labels")):
            return  # handed over already (a redelivered request): nothing left to do
        pv_name = (staged or {}).get("spec", {}).get("volumeName")
        if not pv_name:
            raise TemporaryError(f"the staging PVC {self.namespace}/{staging} is not bound to a volume yet", delay=5.0)
        pv = self.core.read_persistent_volume(pv_name)
        policy = pv.spec.persistent_volume_reclaim_policy if pv.spec else None
        if policy == "Retain" and pv.metadata and pv.metadata.annotations:
            policy = pv.metadata.annotations.get(RECLAIM_ANNOTATION, policy)  # our own earlier, cut-short attempt
        self.core.patch_persistent_volume(pv_name, reserved_for(self.namespace, claim, policy))
        self.core.delete_namespaced_persistent_volume_claim(staging, self.namespace)
        if bound is None:
            manifest = handed_over_claim_manifest(self.targets[volume.name], pv_name)
            self.core.create_namespaced_persistent_volume_claim(
                self.namespace, _model(client.V1PersistentVolumeClaim, manifest)
            )
        self._wait_bound(claim)
        self.core.patch_persistent_volume(
            pv_name,
            {
                "metadata": {"annotations": {RECLAIM_ANNOTATION: None}},
                "spec": {"persistentVolumeReclaimPolicy": policy or "Delete"},
            },
        )
        log.info("PVC %s/%s is bound to the restored volume %s", self.namespace, claim, pv_name)

    def _wait_bound(self, claim: str) -> None:
        for found in self._polled(lambda: self.core.read_namespaced_persistent_volume_claim(claim, self.namespace)):
            if found.status is not None and found.status.phase == "Bound":
                return
        raise TemporaryError(f"PVC {self.namespace}/{claim} was not bound to its restored volume in time")

    def _wait(self, name: str) -> tuple[str, str]:
        """Poll the pod until it ends: (phase, its container's termination message)."""
        phase = None
        for pod in self._polled(lambda: self.core.read_namespaced_pod(name, self.namespace)):
            phase = pod.status.phase if pod.status else None
            if phase in ("Succeeded", "Failed"):
                return phase, _termination_message(pod)
        return "Timeout", f"did not finish within {self.settings.restore_pod_timeout:.0f}s (phase {phase})"

    def _polled(self, read: Callable[[], Any]) -> Iterator[Any]:
        """What ``read()`` answers, every poll interval, until the restore pod timeout has passed."""
        deadline = time.monotonic() + self.settings.restore_pod_timeout
        while True:
            yield read()
            if time.monotonic() > deadline:
                return
            time.sleep(self.settings.restore_poll_interval)

    # --- the notebook --------------------------------------------------------------------------------------

    def _create_notebook(self) -> None:
        assert isinstance(self.model, NotebookTarget)
        manifest = notebook_manifest(self.model, self.volumes, self.claims, self.settings.notebook_image, self.notebook)
        self.custom.create_namespaced_custom_object(
            NOTEBOOK_GROUP, NOTEBOOK_VERSION, self.namespace, NOTEBOOKS, manifest
        )
        log.info("created notebook server %s/%s", self.namespace, self.model.name)

    def _read_notebook(self) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(  # type: ignore[assignment]
                NOTEBOOK_GROUP, NOTEBOOK_VERSION, self.namespace, NOTEBOOKS, self.model.name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    # --- discarding ----------------------------------------------------------------------------------------

    def _discard(self) -> None:
        if isinstance(self.model, NotebookTarget):
            notebook = self._read_notebook()
            if notebook is not None and is_ours(notebook.get("metadata", {}).get("labels")):
                self.custom.delete_namespaced_custom_object(
                    NOTEBOOK_GROUP, NOTEBOOK_VERSION, self.namespace, NOTEBOOKS, self.model.name
                )
        for volume in self.volumes:
            if volume.name in self._made:
                continue  # made by an earlier request, and the run's steps may be using it
            self._delete_pod(self.pod_name(volume))
            for name in (staging_claim_name(self.claims[volume.name]), self.claims[volume.name]):
                claim = self._read_claim(name)
                if claim is not None and is_ours(claim["metadata"].get("labels")):
                    if name == self.claims[volume.name] and self._made_before(claim, volume):
                        continue  # the run's clone, whole (a claim exists only once filled): never undone
                    self.core.delete_namespaced_persistent_volume_claim(name, self.namespace)
                    log.info("discarded PVC %s/%s", self.namespace, name)

    def _read_claim(self, name: str) -> dict[str, Any] | None:
        try:
            claim = self.core.read_namespaced_persistent_volume_claim(name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        found: dict[str, Any] = self.core.api_client.sanitize_for_serialization(claim)
        return found

    def _delete_pod(self, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(
                name, self.namespace, propagation_policy="Background", _preload_content=False
            )
        except ApiException as error:
            if error.status != 404:
                raise


def _model(cls: Any, manifest: dict[str, Any]) -> Any:
    """The client's model of a manifest (the client takes models, and checks them)."""
    return cls.from_dict(manifest)


def _termination_message(pod: Any) -> str:
    for status in (pod.status.container_statuses or []) if pod.status else []:
        terminated = status.state.terminated if status.state else None
        if terminated is not None:
            return terminated.message or terminated.reason or ""
    return ""


async def _call(function: Any, *args: Any) -> Any:
    """Run a blocking Kubernetes call in a thread; an unreachable or failing API server is a temporary error."""
    try:
        return await asyncio.to_thread(function, *args)
    except ApiException as error:
        if error.status in (400, 403, 422):
            raise PermanentError(f"the Kubernetes API refused: {error.status} {error.reason}: {error.body}") from error
        raise TemporaryError(f"the Kubernetes API answered {error.status} {error.reason}") from error
    except (PermanentError, TemporaryError):
        raise
    except OSError as error:
        raise TemporaryError(f"the Kubernetes API is unreachable: {error}") from error
