"""Whether a pod volume an event names is one this snapshotter may read, judged from the Kubernetes objects.

A volume of a run or step event is read only as the claim mounted by the named pod on this node, and only if
that pod is the run's:

* the pod (``pod_name`` in the run's namespace) has the uid the event names, and runs on this node;
* it belongs to the run: Argo made it for the run's workflow (an owner reference to the ``Workflow`` with the
  run's uid, and KFP's ``pipeline/runid`` label, when present, is the run's id), and for a step event it runs
  that step (its node id is the step's); or, for the run's initial snapshot only, it is the notebook server's
  pod that the run's workflow names (annotation ``rok/notebook-pod``), or that one of the run's own pods names
  with the same annotation (its ``create-volume-N`` tasks: the KFP SDK cannot annotate the workflow);
* the pod mounts the claim as the named pod volume, and the claim is bound to the PV whose directory is read
  (the event's ``pv``, when given, must be that one);
* the PV is of a kind whose directory the kubelet makes under the pod's directory (:func:`mount_of`).

Pure code over plain dicts (as the API server sends them): every failed check is a :class:`VolumeRefused`
naming what did not match; a PV of a kind the snapshotter cannot read is an :class:`UnsupportedVolume`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rokcommon.events import RunRef, StepRef, VolumeRef

from rok_snapshotter.volumes import CSI_PLUGIN, UnsupportedVolume, VolumeRefused

RUN_ID_LABEL = "pipeline/runid"
NODE_ID_ANNOTATION = "workflows.argoproj.io/node-id"
NOTEBOOK_POD_ANNOTATION = "rok/notebook-pod"

Object = Mapping[str, Any]

# PV sources whose volumes are mounted through CSI: CSI's own, and the in-tree ones migrated to CSI drivers
# (the kubelet then mounts them as CSI volumes, under the PV's name).
_CSI_SOURCES = (
    "csi",
    "awsElasticBlockStore",
    "gcePersistentDisk",
    "azureDisk",
    "azureFile",
    "cinder",
    "vsphereVolume",
    "portworxVolume",
)
_IN_TREE_PLUGINS = {"local": "kubernetes.io~local-volume", "nfs": "kubernetes.io~nfs"}


@dataclass(frozen=True)
class Mount:
    """Where a PV's files are for a pod: under the kubelet's plugin directory, or (hostPath) on the host."""

    plugin: str | None = None
    host_path: str | None = None


def check_placement(pod: Object, volume: VolumeRef, node: str) -> None:
    """The pod is the one the event names (same uid) and runs on this node."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    where = f"pod {meta.get('namespace')}/{meta.get('name')}"
    if meta.get("uid") != volume.pod_uid:
        raise VolumeRefused(
            f"volume {volume.name!r}: {where} has uid {meta.get('uid')}, not {volume.pod_uid}: the event names "
            "another pod's directory"
        )
    if spec.get("nodeName") != node:
        raise VolumeRefused(
            f"volume {volume.name!r}: {where} runs on node {spec.get('nodeName') or '(none yet)'}, not on this "
            f"node {node}"
        )


def owned_by_run(pod: Object, run: RunRef) -> bool:
    """Whether Argo made the pod for the run's workflow (its KFP run id label, if any, agreeing)."""
    meta = pod.get("metadata") or {}
    owned = any(
        o.get("kind") == "Workflow" and o.get("uid") == run.workflow_uid for o in meta.get("ownerReferences") or ()
    )
    run_id = (meta.get("labels") or {}).get(RUN_ID_LABEL)
    return owned and run_id in (None, run.run_id)


def check_step(pod: Object, volume: VolumeRef, step: StepRef) -> None:
    """The pod runs the event's step (Argo >= 3.4 annotates the node id; before, the pod was named for it)."""
    meta = pod.get("metadata") or {}
    node_id = (meta.get("annotations") or {}).get(NODE_ID_ANNOTATION) or meta.get("name")
    if node_id != step.step_id:
        raise VolumeRefused(
            f"volume {volume.name!r}: pod {meta.get('namespace')}/{meta.get('name')} runs workflow node {node_id}, "
            f"not step {step.step_id}"
        )


def notebook_pod_of_workflow(pod: Object, volume: VolumeRef, run: RunRef, workflows: Sequence[Object]) -> str | None:
    """The notebook server's pod that the run's workflow (found among ``workflows`` by uid) names, if any;
    refused if the run has no such workflow."""
    meta = pod.get("metadata") or {}
    workflow = next((w for w in workflows if (w.get("metadata") or {}).get("uid") == run.workflow_uid), None)
    if workflow is None:
        raise VolumeRefused(
            f"volume {volume.name!r}: pod {meta.get('namespace')}/{meta.get('name')} is not a pod of run "
            f"{run.run_id}, and no workflow of that run with uid {run.workflow_uid} is in namespace {run.namespace}"
        )
    named = _notebook_pod_named(workflow)
    return str(named) if named else None


def check_named_by_pods(
    pod: Object, volume: VolumeRef, run: RunRef, by_workflow: str | None, run_pods: Sequence[Object]
) -> None:
    """The pod, which is not the one the workflow names (``by_workflow``), is the notebook server's pod that one of
    the run's own pods (among ``run_pods``, those Argo made for the run's workflow) names."""
    meta = pod.get("metadata") or {}
    by_pods = sorted({str(named) for p in run_pods if owned_by_run(p, run) and (named := _notebook_pod_named(p))})
    if meta.get("name") not in by_pods:
        raise VolumeRefused(
            f"volume {volume.name!r}: pod {meta.get('namespace')}/{meta.get('name')} is neither a pod of run "
            f"{run.run_id} nor the notebook pod its workflow names ({by_workflow or 'none'}) nor one its pods name "
            f"({', '.join(by_pods) or 'none'})"
        )


def _notebook_pod_named(obj: Object) -> Any:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(NOTEBOOK_POD_ANNOTATION)


def check_claimed(pod: Object, volume: VolumeRef) -> None:
    """The pod mounts the event's claim as the event's pod volume."""
    meta = pod.get("metadata") or {}
    for v in (pod.get("spec") or {}).get("volumes") or ():
        if v.get("name") == volume.pod_volume:
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if claim == volume.pvc:
                return
            raise VolumeRefused(
                f"volume {volume.name!r}: pod {meta.get('namespace')}/{meta.get('name')} mounts "
                f"{'claim ' + claim if claim else 'no claim'} as its volume {volume.pod_volume}, not claim {volume.pvc}"
            )
    raise VolumeRefused(
        f"volume {volume.name!r}: pod {meta.get('namespace')}/{meta.get('name')} has no volume {volume.pod_volume}"
    )


def bound_volume(claim: Object, volume: VolumeRef) -> str:
    """The PV the claim is bound to (which the event's ``pv``, when given, must be)."""
    meta = claim.get("metadata") or {}
    where = f"claim {meta.get('namespace')}/{meta.get('name')}"
    pv = (claim.get("spec") or {}).get("volumeName")
    phase = (claim.get("status") or {}).get("phase")
    if not pv or phase not in (None, "Bound"):
        raise VolumeRefused(f"volume {volume.name!r}: {where} is not bound")
    if volume.pv and volume.pv != pv:
        raise VolumeRefused(f"volume {volume.name!r}: {where} is bound to {pv}, not {volume.pv}")
    return str(pv)


def mount_of(pv: Object, volume: VolumeRef, namespace: str, claim: str) -> Mount:
    """Where the kubelet puts the PV's files for a pod, for the kinds of PV the snapshotter reads."""
    name = (pv.get("metadata") or {}).get("name")
    spec = pv.get("spec") or {}
    ref = spec.get("claimRef") or {}
    if (ref.get("namespace"), ref.get("name")) != (namespace, claim):
        raise VolumeRefused(f"volume {volume.name!r}: PV {name} is not bound to claim {namespace}/{claim}")
    if any(source in spec for source in _CSI_SOURCES):
        return Mount(plugin=CSI_PLUGIN)
    for source, plugin in _IN_TREE_PLUGINS.items():
        if source in spec:
            return Mount(plugin=plugin)
    if "hostPath" in spec:
        return Mount(host_path=str((spec["hostPath"] or {}).get("path") or ""))
    kinds = sorted(k for k in spec if isinstance(spec[k], dict) and k not in ("claimRef", "capacity", "nodeAffinity"))
    raise UnsupportedVolume(
        f"volume {volume.name!r}: PV {name} is of a kind the snapshotter does not read ({', '.join(kinds) or 'none'}); "
        "it reads CSI, local, NFS and hostPath PVs"
    )
