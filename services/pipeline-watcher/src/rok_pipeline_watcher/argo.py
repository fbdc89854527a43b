"""Reading Argo ``Workflow`` and ``Pod`` objects as KFP lays them out: which nodes are steps, what they mount.

Plain dicts in, plain values out: no Kubernetes client here. Two layouts exist:

* **KFP v1**: each step is one ``Pod`` node, named for the task. Retries put the attempts under a ``Retry``
  node, as children named ``task(0)``, ``task(1)``, ...
* **KFP v2**: each task is a ``DAG`` node named for the task (template ``…system-container-executor``); the
  user's code runs in its child ``Pod`` node ``executor`` (template ``…system-container-impl``, see
  :func:`is_v2_executor_impl`; with a retry policy a ``Retry`` node sits between them). The ``*-driver`` pods
  decide and cache; they are not steps. A cache hit shows as an ``executor`` node that is ``Skipped`` (its
  ``when`` was false).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

GROUP, VERSION, WORKFLOWS = "argoproj.io", "v1alpha1", "workflows"  # the Workflow resource
API_VERSION = f"{GROUP}/{VERSION}"

RUN_ID_LABEL = "pipeline/runid"
RUN_NAME_ANNOTATION = "pipelines.kubeflow.org/run_name"
PIPELINE_SPEC_ANNOTATION = "pipelines.kubeflow.org/pipeline_spec"  # KFP v1: JSON with the pipeline's name
CACHED_LABEL = "pipelines.kubeflow.org/reused_from_cache"  # KFP v1 cache: the pod's output was reused
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
NODE_ID_ANNOTATION = "workflows.argoproj.io/node-id"
NODE_NAME_ANNOTATION = "workflows.argoproj.io/node-name"

# rok's own annotations (set by whoever submits the run, e.g. from the notebook):
WORKSPACE_ANNOTATION = "rok/workspace-claim"  # the claim (or pod volume) that is the notebook's workspace
NOTEBOOK_POD_ANNOTATION = "rok/notebook-pod"  # the notebook server's pod, whose volumes are snapshotted first
GUARD_CONTAINER = "rok-guard"  # name of the step guard's sidecar (see rok_pipeline_watcher.guard)

MAIN_CONTAINER = "main"
DRIVER_TEMPLATES = ("system-container-driver", "system-dag-driver")
V2_IMPL_TEMPLATE = "system-container-impl"

ACTIVE = ("Pending", "Running")
DONE = ("Succeeded", "Failed", "Error")
NO_SNAPSHOT = ("Skipped", "Omitted")

_ATTEMPT = re.compile(r"^(?P<name>.*)\((?P<attempt>\d+)\)$")


@dataclass(frozen=True)
class StepNode:
    """One attempt of one step: the workflow node that runs the user's code."""

    node_id: str
    name: str  # the task's name
    attempt: int
    phase: str
    host: str | None  # the node's hostNodeName, if Argo recorded it
    started_at: str | None
    finished_at: str | None


def metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return metadata(obj).get("labels") or {}


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return metadata(obj).get("annotations") or {}


def is_driver(node: Mapping[str, Any]) -> bool:
    """A KFP v2 driver node (by its template: a KFP v1 step may well be named ``something-driver``)."""
    return (node.get("templateName") or "") in DRIVER_TEMPLATES


def is_v2_executor_impl(template: str) -> bool:
    """Whether ``template`` is the one that runs a KFP v2 task's code: ``system-container-impl``, or it with a
    prefix ending in ``-``.

    The KFP backend's Argo compiler (``addContainerExecutorTemplate`` in
    ``backend/src/v2/compiler/argocompiler/container.go``) names a container task's two templates
    ``system-container-executor`` (a DAG with one task, ``executor``) and ``system-container-impl`` (the
    pod), and only ever prepends to both:

    * 2.4.1–2.5.0, a task with a retry policy: ``<task>-`` (``train-system-container-impl``);
    * since 2.14, a task with a retry policy (not a nested pipeline): ``retry-``;
    * since 2.14, a task that sets pod metadata (kfp-kubernetes ``add_pod_label`` / ``add_pod_annotation``):
      ``metadata-<number of annotations>-<number of labels>-``, in front of ``retry-`` when both apply
      (``metadata-1-2-retry-system-container-impl``).

    So the rule is the suffix: the template is ``system-container-impl`` or ends with ``-system-container-impl``.
    The drivers (``system-container-driver``, ``system-dag-driver``) never take a prefix.
    """
    return template == V2_IMPL_TEMPLATE or template.endswith("-" + V2_IMPL_TEMPLATE)


def step_nodes(workflow: Mapping[str, Any]) -> Iterator[StepNode]:
    """The step attempts of a workflow, in the order Argo started them."""
    nodes: Mapping[str, Mapping[str, Any]] = (workflow.get("status") or {}).get("nodes") or {}
    parent_of = {child: node_id for node_id, node in nodes.items() for child in node.get("children") or ()}
    found = []
    for node_id, node in nodes.items():
        if node.get("type") != "Pod" or is_driver(node):
            continue
        display = node.get("displayName") or node.get("name") or node_id
        name, attempt = display, 0
        parent = nodes.get(parent_of.get(node_id, ""), {})
        match = _ATTEMPT.match(display)
        if match and parent.get("type") == "Retry":
            name, attempt = match["name"], int(match["attempt"])
            parent = nodes.get(parent_of.get(parent.get("id", ""), ""), {})
        if is_v2_executor_impl(node.get("templateName") or ""):
            # KFP v2: the step is named for the task's DAG node, the executor's parent
            task = _v2_task(node_id, nodes, parent_of)
            if task is None:
                continue
            name = task
        found.append(
            StepNode(
                node_id=node_id,
                name=name,
                attempt=attempt,
                phase=node.get("phase") or "Pending",
                host=node.get("hostNodeName") or None,
                started_at=node.get("startedAt"),
                finished_at=node.get("finishedAt"),
            )
        )
    found.sort(key=lambda s: (s.started_at or "", s.node_id))
    return iter(found)


def _v2_task(node_id: str, nodes: Mapping[str, Mapping[str, Any]], parent_of: Mapping[str, str]) -> str | None:
    current = parent_of.get(node_id)
    while current is not None:
        node = nodes.get(current) or {}
        if node.get("type") == "DAG":  # the nearest DAG above the executor is the task's own node
            return str(node.get("displayName") or node.get("name") or current)
        current = parent_of.get(current)
    return None


def pod_node_id(pod: Mapping[str, Any]) -> str | None:
    """The workflow node a pod runs: Argo >= 3.4 annotates it; before, the pod was named for its node."""
    return annotations_of(pod).get(NODE_ID_ANNOTATION) or metadata(pod).get("name")


def pod_is_cached(pod: Mapping[str, Any]) -> bool:
    return labels(pod).get(CACHED_LABEL) == "true"


def pod_is_guarded(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return any(c.get("name") == GUARD_CONTAINER for c in spec.get("initContainers") or ())


def main_exit_code(pod: Mapping[str, Any]) -> int | None:
    """The exit code of the pod's ``main`` container once it has terminated (None while it runs)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == MAIN_CONTAINER:
            terminated = (status.get("state") or {}).get("terminated")
            if terminated is not None:
                return int(terminated.get("exitCode", 0))
    return None


def main_finished_at(pod: Mapping[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == MAIN_CONTAINER:
            return ((status.get("state") or {}).get("terminated") or {}).get("finishedAt")
    return None


@dataclass(frozen=True)
class MountedVolume:
    """A volume a pod mounts: a PVC (cluster) or a host path (the local runner)."""

    pod_volume: str
    claim: str | None
    path: str | None


def mounted_volumes(pod: Mapping[str, Any], container: str | None = MAIN_CONTAINER) -> list[MountedVolume]:
    """The pod's PVC and host-path volumes, in the pod's order: those ``container`` mounts, or all (None)."""
    spec = pod.get("spec") or {}
    mounted: set[str] | None = None
    for c in spec.get("containers") or ():
        if container is not None and c.get("name") == container:
            mounted = {m.get("name") for m in c.get("volumeMounts") or ()}
    found = []
    for volume in spec.get("volumes") or ():
        name = volume.get("name")
        if mounted is not None and name not in mounted:
            continue
        if "persistentVolumeClaim" in volume:
            found.append(MountedVolume(name, volume["persistentVolumeClaim"].get("claimName"), None))
        elif "hostPath" in volume:
            found.append(MountedVolume(name, None, volume["hostPath"].get("path")))
    return found


def concluded(workflow: Mapping[str, Any], pods: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The workflow as it must have ended, when it is gone before its end was seen (deleted while running, or
    deleted while nobody watched and its history compacted): whatever was not seen done ended in ``Error``.

    A step whose pod's ``main`` container was seen terminated keeps its running phase: its exit code tells its
    outcome. The others, and the run, are ``Error``: rok cannot know better, and a finished step or run is
    what makes the after-snapshot and settles the lineage.
    """
    ended = copy.deepcopy(dict(workflow))
    status = ended.setdefault("status", {})
    if status.get("phase") not in DONE:
        status["phase"] = "Error"
    for node_id, node in (status.get("nodes") or {}).items():
        pod = pods.get(node_id)
        if node.get("phase") in ACTIVE and not (pod is not None and main_exit_code(pod) is not None):
            node["phase"] = "Error"
    return ended
