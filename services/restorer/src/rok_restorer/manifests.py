"""The Kubernetes objects of a restore, built from the request: plain dicts, no API calls.

For every volume a PersistentVolumeClaim (:func:`claim_manifest`) and a short-lived restore pod that mounts it
(:func:`restore_pod_manifest`), pinned to the nodes that run a snapshotter, which runs the store engine's
verified restore (``rok snapshot restore``) into the empty volume and ends; its termination message carries the
statistics. The pod reads the object store's credentials from a Secret that it owns
(:func:`credentials_secret_manifest`). For a notebook target a Kubeflow ``Notebook`` (kubeflow.org/v1,
:func:`notebook_manifest`) mounts the new claims where the notebook server the run came from mounted them, with
its image, resources and environment; without that record, the way the notebook form mounts "Existing" volumes:
the workspace at ``/home/jovyan``, each data volume at ``/home/jovyan/<volume>``.

Every object carries the label ``app.kubernetes.io/managed-by: rok-restorer`` (:data:`MANAGED_BY`);
:func:`is_ours` tells an object that does. ``rok_restorer.kubernetes`` creates, waits for and removes them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rokcommon.errors import PermanentError
from rokcommon.events import NotebookTarget, PvcTarget
from rokcommon.events.restores import RUN_LABEL
from rokcommon.notebooks import NotAQuantity, NotebookServer, quantity_bytes, suggested_size, with_headroom

from rok_restorer.targets import VolumeToRestore

MANAGED_BY = {"app.kubernetes.io/managed-by": "rok-restorer"}
VOLUME_LABEL = "rok.kubeflow.org/volume"
SNAPSHOT_ANNOTATION = "rok.kubeflow.org/snapshot"
STAGING_LABEL = "rok.kubeflow.org/staging-for"  # on a staging claim: the claim it will become
RECLAIM_ANNOTATION = "rok.kubeflow.org/reclaim-policy"  # on a volume being handed over: its own reclaim policy
NOTEBOOK_GROUP, NOTEBOOK_VERSION, NOTEBOOKS = "kubeflow.org", "v1", "notebooks"
WORKSPACE_MOUNT = "/home/jovyan"
MOUNT = "/volume"
# Variables of the AWS SDK the restore pod needs to read the repository (copied from the restorer's process).
CREDENTIALS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION")
# The restore pod's program: sh -c RESTORE_SCRIPT <volume dir> <snapshot id> <repository> <termination log>.
# A new ext4 volume holds lost+found, and the store engine restores only into an empty directory. What the
# restore prints (its JSON statistics, or the error) becomes the pod's termination message.
RESTORE_SCRIPT = (
    'rmdir "$0/lost+found" 2>/dev/null || true; exec rok snapshot restore "$1" --repo "$2" --to "$0" --json >"$3" 2>&1'
)
TERMINATION_LOG = "/dev/termination-log"


def claim_names(model: PvcTarget | NotebookTarget, volumes: Sequence[VolumeToRestore]) -> list[str]:
    """The PVC of each volume: the requested name for a PVC target; for a notebook ``<notebook>-<volume>``
    (``<notebook>-workspace`` for the first, as the notebook form names a new workspace volume)."""
    if isinstance(model, PvcTarget):
        if len(volumes) != 1:
            raise PermanentError(
                f"a PVC target takes one volume, and this request restores {len(volumes)}: "
                "name the volume to restore, or restore into a new notebook server"
            )
        return [model.name]
    names = []
    for i, volume in enumerate(volumes):
        suffix = "workspace" if i == 0 else dns_label(volume.name)
        names.append(dns_label(f"{model.name}-{suffix}"))
    if len(set(names)) != len(names):
        raise PermanentError(f"the volumes {[v.name for v in volumes]} map to the same PVC names {names}")
    return names


def volume_size(requested: str | None, volume: VolumeToRestore, default: str) -> str:
    """The new PVC's size: the request's (refused if smaller than the data), else the original claim's if the
    data fits in it, else the data's with headroom; ``default`` when nothing is known of either."""
    data = volume.size
    if not requested:
        return suggested_size(data, volume.original, default)
    try:
        asked = quantity_bytes(requested)
    except NotAQuantity as error:
        raise PermanentError(str(error)) from None
    if asked < data:
        raise PermanentError(
            f"a {requested} PVC cannot hold volume {volume.name!r}: its data is {data} bytes; "
            f"ask for at least {with_headroom(data)}"
        )
    return requested


def dns_label(text: str) -> str:
    """``text`` as a Kubernetes name (a DNS label: lower-case letters, digits and ``-``, at most 63)."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:63].rstrip("-") or "volume"


def is_ours(labels: Mapping[str, str] | None) -> bool:
    """Whether an object with these labels was made by the restorer (and so may be removed by it)."""
    return (labels or {}).items() >= MANAGED_BY.items()


def claim_manifest(
    model: PvcTarget | NotebookTarget, volume: VolumeToRestore, claim: str, default_size: str
) -> dict[str, Any]:
    """The PVC ``claim`` that ``volume`` is restored into: size, access mode and storage class as the request
    names them, else as the original claim had them (recorded with the run), else the cluster's defaults."""
    size = model.size if isinstance(model, PvcTarget) else model.sizes.get(volume.name)
    original = volume.original
    access = model.access_mode if isinstance(model, PvcTarget) else None
    if access is None:
        access = original.access_modes[0] if original and original.access_modes else "ReadWriteOnce"
    spec: dict[str, Any] = {
        "accessModes": [access],
        "resources": {"requests": {"storage": volume_size(size, volume, default_size)}},
    }
    storage_class = model.storage_class or (original.storage_class if original else None)
    if storage_class:
        spec["storageClassName"] = storage_class
    labels = {**MANAGED_BY, VOLUME_LABEL: dns_label(volume.name)}
    if isinstance(model, PvcTarget) and model.run_id:
        labels[RUN_LABEL] = model.run_id  # a run's clone: retention (the pipeline-watcher) follows this label
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim,
            "namespace": model.namespace,
            "labels": labels,
            "annotations": {SNAPSHOT_ANNOTATION: volume.snapshot_id},
        },
        "spec": spec,
    }


def staging_claim_name(claim: str) -> str:
    """The claim a volume is restored into before it is handed over to ``claim`` (see rok_restorer.kubernetes)."""
    return dns_label(f"rok-staging-{claim}")


def staging_claim_manifest(target: dict[str, Any]) -> dict[str, Any]:
    """The staging claim of the PVC ``target`` (its manifest): the same spec, under the staging name."""
    name = target["metadata"]["name"]
    return {
        **target,
        "metadata": {
            **target["metadata"],
            "name": staging_claim_name(name),
            "labels": {**target["metadata"]["labels"], STAGING_LABEL: name},
        },
    }


def handed_over_claim_manifest(target: dict[str, Any], volume_name: str) -> dict[str, Any]:
    """The PVC ``target`` bound from the start to the filled volume ``volume_name`` (reserved for it)."""
    return {**target, "spec": {**target["spec"], "volumeName": volume_name}}


def reserved_for(namespace: str, claim: str, reclaim_policy: str | None) -> dict[str, Any]:
    """The patch of a filled PersistentVolume that reserves it for ``claim``: its claimRef names the new claim
    (no uid yet: the claim does not exist), and it is kept (Retain) while the staging claim is deleted; its
    former reclaim policy is remembered in an annotation, and given back once the new claim is bound."""
    return {
        "metadata": {"annotations": {RECLAIM_ANNOTATION: reclaim_policy or "Delete"}},
        "spec": {
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": claim,
                "uid": None,
                "resourceVersion": None,
            },
            "persistentVolumeReclaimPolicy": "Retain",
        },
    }


def restore_pod_name(claim: str) -> str:
    return dns_label(f"rok-restore-{claim}")


def restore_pod_manifest(
    namespace: str,
    volume: VolumeToRestore,
    claim: str,
    *,
    nodes: Sequence[str],
    image: str,
    timeout: float,
    name: str | None = None,
) -> dict[str, Any]:
    """The pod ``name`` (default ``rok-restore-<claim>``) that restores ``volume`` into ``claim`` on one of
    ``nodes`` (those running a snapshotter), within ``timeout`` seconds; its credentials come from the Secret of
    the same name."""
    name = name or restore_pod_name(claim)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, VOLUME_LABEL: dns_label(volume.name)},
            # Kubeflow's namespaces inject Istio sidecars, which would keep the pod from ever completing.
            "annotations": {"sidecar.istio.io/inject": "false", SNAPSHOT_ANNOTATION: volume.snapshot_id},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "activeDeadlineSeconds": int(timeout),
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": list(nodes)}
                                ]
                            }
                        ]
                    }
                }
            },
            "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
            "containers": [
                {
                    "name": "restore",
                    "image": image,
                    "command": [
                        "/bin/sh",
                        "-c",
                        RESTORE_SCRIPT,
                        MOUNT,
                        volume.snapshot_id,
                        volume.repository,
                        TERMINATION_LOG,
                    ],
                    "envFrom": [{"secretRef": {"name": name}}],
                    "env": [{"name": "ROK_LOG_FORMAT", "value": "text"}],
                    "terminationMessagePath": TERMINATION_LOG,
                    "terminationMessagePolicy": "File",
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "256Mi"},
                        "limits": {"memory": "1Gi"},
                    },
                    # Files are restored with their owners and modes: root, with only the capabilities that
                    # takes.
                    "securityContext": {
                        "runAsUser": 0,
                        "runAsNonRoot": False,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]},
                    },
                    "volumeMounts": [{"name": "volume", "mountPath": MOUNT}],
                }
            ],
            "volumes": [{"name": "volume", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def credentials_secret_manifest(
    namespace: str, pod_name: str, pod_uid: str, environment: Mapping[str, str]
) -> dict[str, Any]:
    """The restore pod's Secret: the object store's variables of ``environment``, owned by the pod."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": pod_name,
            "namespace": namespace,
            "labels": dict(MANAGED_BY),
            # Owned by the pod: deleting the pod (or the namespace) removes the credentials too.
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}],
        },
        "stringData": {k: environment[k] for k in CREDENTIALS if environment.get(k)},
    }


def notebook_manifest(
    model: NotebookTarget,
    volumes: Sequence[VolumeToRestore],
    claims: Mapping[str, str],
    default_image: str,
    original: NotebookServer | None = None,
) -> dict[str, Any]:
    """The notebook server that mounts the restored ``claims`` (by volume name), the first volume as workspace.

    With the ``original`` notebook server (recorded when the run started) it is that server again: its image
    (unless the request names another), resources, environment, service account and each volume's mount path.
    Without it, the notebook form's defaults: the workspace at ``/home/jovyan``, each data volume at
    ``/home/jovyan/<volume>``."""
    name = model.name
    mounts, pod_volumes = [], []
    for i, volume in enumerate(volumes):
        claim = claims[volume.name]
        if volume.original is not None:
            path = volume.original.mount_path
        else:
            path = WORKSPACE_MOUNT if i == 0 else f"{WORKSPACE_MOUNT}/{dns_label(volume.name)}"
        pod_volumes.append({"name": claim, "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": claim, "mountPath": path})
    pod_volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    container: dict[str, Any] = {
        "name": name,
        "image": model.image or (original.image if original else "") or default_image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {k: dict(v) for k, v in original.resources.items() if v}
        if original and any(original.resources.values())
        else {"requests": {"cpu": "0.5", "memory": "1Gi"}},
        "volumeMounts": mounts,
    }
    if original and original.env:
        container["env"] = [dict(e) for e in original.env]
    server_type = (original.server_type if original else None) or "jupyter"
    return {
        "apiVersion": f"{NOTEBOOK_GROUP}/{NOTEBOOK_VERSION}",
        "kind": "Notebook",
        "metadata": {
            "name": name,
            "namespace": model.namespace,
            "labels": {"app": name, **MANAGED_BY},
            "annotations": {"notebooks.kubeflow.org/server-type": server_type},
        },
        "spec": {
            "template": {
                "spec": {
                    "serviceAccountName": (original.service_account if original else None) or "default-editor",
                    "containers": [container],
                    "volumes": pod_volumes,
                }
            }
        },
    }
