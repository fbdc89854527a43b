"""The mutating admission webhook's decision: which pods get a step guard, and the patch that adds it.

A pod gets the guard when it is a KFP step that takes snapshots: it carries KFP's run label
(``pipeline/runid``), it is not a KFP v2 driver, it was not reused from the KFP v1 cache, it mounts at
least one PVC, and it has no guard yet. Every other pod is allowed untouched.

The guard is a native sidecar: an ``initContainers`` entry (first, so it holds every other container) with
``restartPolicy: Always`` and a ``startupProbe`` running ``rok-guard probe``. Kubernetes starts the rest of
the pod only once that probe succeeds, and stops the sidecar (SIGTERM) only after the main containers ended.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from rok_pipeline_watcher import argo

PROBE_PERIOD = 2  # seconds between two startup probes


@dataclass(frozen=True)
class GuardConfig:
    image: str
    nats_url: str
    before_timeout: float = 600.0
    after_timeout: float = 600.0
    nats_user: str = ""  # the guard's NATS user and password (rokcommon.permissions.guard), if the bus has users
    nats_password: str = ""


def is_driver_pod(pod: dict[str, Any]) -> bool:
    """KFP v2 driver pods (templates ``system-*-driver``, running KFP's ``driver``) decide; they run no user code.

    Known by the template in the pod's name (Argo's POD_NAMES=v2, the default) or by the driver command; not by
    the task's name, since a KFP v1 step may well be called ``something-driver``.
    """
    name = argo.metadata(pod).get("name") or argo.metadata(pod).get("generateName") or ""
    if any(f"-{template}-" in name for template in argo.DRIVER_TEMPLATES):
        return True
    containers = (pod.get("spec") or {}).get("containers") or ()
    return any(c.get("name") == argo.MAIN_CONTAINER and (c.get("command") or [None])[0] == "driver" for c in containers)


def is_step_pod(pod: dict[str, Any]) -> bool:
    """Whether a pod is a KFP step whose volumes are snapshotted, and so gets a guard."""
    if not argo.labels(pod).get(argo.RUN_ID_LABEL):
        return False
    if is_driver_pod(pod) or argo.pod_is_cached(pod) or argo.pod_is_guarded(pod):
        return False
    volumes = (pod.get("spec") or {}).get("volumes") or ()
    return any("persistentVolumeClaim" in v for v in volumes)


def _workflow_uid(pod: dict[str, Any]) -> str:
    for owner in argo.metadata(pod).get("ownerReferences") or ():
        if owner.get("kind") == "Workflow":
            return str(owner.get("uid") or "")
    return ""


def _credentials(config: GuardConfig) -> list[dict[str, str]]:
    """The guard's NATS login, as values: a step pod in a profile namespace cannot read a Secret of rok's."""
    if not config.nats_user:
        return []
    return [
        {"name": "ROK_NATS_USER", "value": config.nats_user},
        {"name": "ROK_NATS_PASSWORD", "value": config.nats_password},
    ]


def guard_container(pod: dict[str, Any], config: GuardConfig) -> dict[str, Any]:
    """The sidecar for one step pod: it knows its run (workflow uid) and its step (the Argo node id)."""
    # the guard gives up waiting after before_timeout; the probe must not give up (and restart it) first
    failures = math.ceil(config.before_timeout / PROBE_PERIOD) + 10
    return {
        "name": argo.GUARD_CONTAINER,
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "command": ["rok-guard", "run"],
        "env": [
            {"name": "ROK_NATS_URL", "value": config.nats_url},
            {"name": "ROK_GUARD_WORKFLOW_UID", "value": _workflow_uid(pod)},
            {"name": "ROK_GUARD_STEP_ID", "value": argo.pod_node_id(pod) or ""},
            {"name": "ROK_GUARD_BEFORE_TIMEOUT", "value": str(config.before_timeout)},
            {"name": "ROK_GUARD_AFTER_TIMEOUT", "value": str(config.after_timeout)},
            {"name": "ROK_LOG_FORMAT", "value": "json"},
            *_credentials(config),
        ],
        "startupProbe": {
            "exec": {"command": ["rok-guard", "probe"]},
            "periodSeconds": PROBE_PERIOD,
            "failureThreshold": failures,
            "timeoutSeconds": 5,
        },
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }


def guard_patch(pod: dict[str, Any], config: GuardConfig) -> list[dict[str, Any]]:
    """The JSON patch (RFC 6902) that adds the guard, and a grace period long enough for its last wait."""
    spec = pod.get("spec") or {}
    container = guard_container(pod, config)
    patch: list[dict[str, Any]] = []
    if spec.get("initContainers"):
        patch.append({"op": "add", "path": "/spec/initContainers/0", "value": container})
    else:
        patch.append({"op": "add", "path": "/spec/initContainers", "value": [container]})
    grace = math.ceil(config.after_timeout) + 30
    if int(spec.get("terminationGracePeriodSeconds") or 30) < grace:
        patch.append({"op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": grace})
    return patch


def review(admission_review: dict[str, Any], config: GuardConfig) -> dict[str, Any]:
    """Answer one ``admission.k8s.io/v1`` AdmissionReview: always allowed, patched for KFP step pods."""
    request = admission_review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    pod = request.get("object") or {}
    kind = (request.get("kind") or {}).get("kind")
    if kind == "Pod" and request.get("operation", "CREATE") == "CREATE" and is_step_pod(pod):
        patch = guard_patch(pod, config)
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {
        "apiVersion": admission_review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }
