"""Volumes in a cluster: the claim a run's pod mounts on this node, checked with the Kubernetes API, read where
the kubelet mounted it.

For each volume of an event :class:`ClusterVolumes` reads the pod the event names (in the run's namespace), the
run's workflow when the pod is the notebook's, the claim and its PV, applies :mod:`rok_snapshotter.pod_checks`
to them and builds the kubelet's path from what the API said (:func:`rok_snapshotter.volumes.kubelet_mount`),
never from the event's own ``path`` or ``plugin``. The calls it makes (RBAC: ``deploy/base/snapshotter``):
``pods`` get and list, ``persistentvolumeclaims`` get, ``persistentvolumes`` get, ``workflows.argoproj.io`` list.

The official client is synchronous: each call runs in a worker thread. An object that does not exist refuses
the volume; any other failure of the API (unreachable, 5xx, 403) is temporary, so the event is tried again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client
from rokcommon.errors import TemporaryError
from rokcommon.events import RunRef, StepRef, VolumeRef

from rok_snapshotter import pod_checks
from rok_snapshotter.volumes import VolumeRefused, directory_in_roots, kubelet_mount

log = logging.getLogger(__name__)

ARGO_GROUP, ARGO_VERSION, WORKFLOWS = "argoproj.io", "v1alpha1", "workflows"
_POD_FIELDS = ("pod_name", "pod_uid", "pod_volume", "pvc")


class ClusterVolumes:
    """Volumes in a cluster: PVCs mounted by a run's pods on ``node``."""

    def __init__(self, api_client: Any, *, node: str, pods_dir: Path, roots: Sequence[Path] = ()) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.node = node
        self.pods_dir = pods_dir
        self.roots = tuple(roots)  # host directories a hostPath PV may name

    async def locate(self, volume: VolumeRef, run: RunRef, step: StepRef | None) -> Path:
        missing = [f for f in _POD_FIELDS if not getattr(volume, f)]
        if missing:
            raise VolumeRefused(
                f"volume {volume.name!r} lacks {', '.join(missing)}: in a cluster the snapshotter reads only a "
                "claim mounted by a run's pod on its node, never a path an event names"
            )
        namespace, claim = run.namespace, str(volume.pvc)
        pod = await self._read(
            f"pod {namespace}/{volume.pod_name}",
            lambda: self.core.read_namespaced_pod(volume.pod_name, namespace, _preload_content=False),
        )
        pod_checks.check_placement(pod, volume, self.node)
        if pod_checks.owned_by_run(pod, run):
            if step is not None:
                pod_checks.check_step(pod, volume, step)
        elif step is not None:
            raise VolumeRefused(
                f"volume {volume.name!r}: pod {namespace}/{volume.pod_name} is not a pod of run {run.run_id} "
                f"(workflow {run.workflow_uid})"
            )
        else:
            named = pod_checks.notebook_pod_of_workflow(pod, volume, run, await self._workflows(run))
            if named != volume.pod_name:  # only then are the run's pods listed
                pod_checks.check_named_by_pods(pod, volume, run, named, await self._run_pods(run))
        pod_checks.check_claimed(pod, volume)
        pvc = await self._read(
            f"claim {namespace}/{claim}",
            lambda: self.core.read_namespaced_persistent_volume_claim(claim, namespace, _preload_content=False),
        )
        pv_name = pod_checks.bound_volume(pvc, volume)
        pv = await self._read(
            f"PV {pv_name}", lambda: self.core.read_persistent_volume(pv_name, _preload_content=False)
        )
        mount = pod_checks.mount_of(pv, volume, namespace, claim)
        if mount.plugin is None:
            return directory_in_roots(volume, mount.host_path or "", self.roots, what=f"hostPath PV {pv_name}")
        return kubelet_mount(volume, self.pods_dir, str(volume.pod_uid), mount.plugin, pv_name)

    async def _workflows(self, run: RunRef) -> list[dict[str, Any]]:
        found = await self._read(
            f"the workflows of run {run.namespace}/{run.run_id}",
            lambda: self.custom.list_namespaced_custom_object(
                ARGO_GROUP,
                ARGO_VERSION,
                run.namespace,
                WORKFLOWS,
                label_selector=f"{pod_checks.RUN_ID_LABEL}={run.run_id}",
                _preload_content=False,
            ),
        )
        return list(found.get("items") or ())

    async def _run_pods(self, run: RunRef) -> list[dict[str, Any]]:
        found = await self._read(
            f"the pods of run {run.namespace}/{run.run_id}",
            lambda: self.core.list_namespaced_pod(
                run.namespace, label_selector=f"{pod_checks.RUN_ID_LABEL}={run.run_id}", _preload_content=False
            ),
        )
        return list(found.get("items") or ())

    async def _read(self, what: str, call: Callable[[], Any]) -> dict[str, Any]:
        """The object ``call`` reads (raw, ``_preload_content=False``), as the plain dict the API server sent."""
        try:
            response = await asyncio.to_thread(call)
        except client.ApiException as error:
            if error.status == 404:
                raise VolumeRefused(f"{what} does not exist") from None
            raise TemporaryError(f"cannot read {what} from the Kubernetes API: {error.status} {error.reason}") from None
        except Exception as error:  # unreachable, reset, timed out
            raise TemporaryError(
                f"cannot read {what} from the Kubernetes API: {type(error).__name__}: {error}"
            ) from None
        try:
            return dict(json.loads(response.data))
        finally:
            response.release_conn()
