"""KFP v2 workflows as each compiler version lays out a task's executor templates, derived from the v2 fixture.

The KFP backend's Argo compiler names a container task's templates ``<prefix>system-container-executor`` (a DAG
whose one task, ``executor``, runs the pod) and ``<prefix>system-container-impl`` (the pod); with a retry
policy the impl template carries a ``retryStrategy``, so Argo puts a ``Retry`` node named ``executor`` between
them, with one ``Pod`` child per attempt, ``executor(0)``, ``executor(1)``, … Argo derives a node's id from
its name (the workflow's name, ``-``, the FNV-1a hash of the node's name) and, with pod names v2, a pod's
name from the workflow's name, the template's name and that hash.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from watcher_testkit import Run

NODE_ID = "workflows.argoproj.io/node-id"
NODE_NAME = "workflows.argoproj.io/node-name"

# prefix of the templates, and whether the task has a retry policy (its impl template then retries)
VARIANTS = {
    "plain (every version)": ("", False),
    "retry policy (kfp >= 2.14)": ("retry-", True),
    "pod metadata (kfp >= 2.14, kfp-kubernetes)": ("metadata-1-2-", False),
    "pod metadata and retry policy (kfp >= 2.14)": ("metadata-1-2-retry-", True),
    "pod metadata without annotations (kfp >= 2.14)": ("metadata-0-1-", False),
    "retry policy (kfp 2.4.1 to 2.5.0)": ("train-", True),
}


def fnv32a(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def node_id(workflow_name: str, node_name: str) -> str:
    return f"{workflow_name}-{fnv32a(node_name)}"


def with_train_compiled_as(
    run: Run, prefix: str, retried: bool, attempts: tuple[str, ...] = ("Failed", "Succeeded")
) -> Run:
    """``run`` (the v2 fixture) with its ``train`` task compiled with template ``prefix``, retried if ``retried``
    (one attempt per phase in ``attempts``)."""
    run = run.copy()
    workflow = run.workflow
    name = workflow["metadata"]["name"]
    nodes: dict[str, Any] = workflow["status"]["nodes"]
    task, executor = run.node(".train"), run.node(".train.executor")
    pod = run.pods.pop(executor["id"])
    run.pod_list.remove(pod)
    executor_template, impl_template = f"{prefix}system-container-executor", f"{prefix}system-container-impl"
    task["templateName"] = executor_template
    templates = workflow["spec"]["templates"]
    templates.append(
        {
            **copy.deepcopy(templates[0]),
            "name": executor_template,
            "dag": {"tasks": [{**templates[0]["dag"]["tasks"][0], "template": impl_template}]},
        }
    )
    impl: dict[str, Any] = {"name": impl_template, "container": {"name": "", "image": "ghcr.io/kubeflow/kfp-launcher"}}
    if retried:
        impl["retryStrategy"] = {"limit": "{{inputs.parameters.retry-max-count}}"}
    if prefix.startswith("metadata-"):
        impl["metadata"] = {"annotations": {"team": "ml"}, "labels": {"cost-center": "42", "tier": "gpu"}}
    templates.append(impl)

    def pod_for(node: dict[str, Any]) -> dict[str, Any]:
        attempt = copy.deepcopy(pod)
        meta = attempt["metadata"]
        meta["name"] = f"{name}-{impl_template}-{fnv32a(node['name'])}"
        meta["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, meta["name"]))  # a pod of its own per attempt
        meta["annotations"].update({NODE_ID: node["id"], NODE_NAME: node["name"]})
        if "metadata" in impl:
            meta["annotations"].update(impl["metadata"]["annotations"])
            meta["labels"].update(impl["metadata"]["labels"])
        return attempt

    executor["templateName"] = impl_template
    pods = []
    if not retried:
        pods.append(pod_for(executor))
    else:
        retry = {**executor, "type": "Retry", "children": []}
        retry.pop("hostNodeName", None)
        nodes[executor["id"]] = retry
        for number, phase in enumerate(attempts):
            child_name = f"{executor['name']}({number})"
            child = {
                **executor,
                "id": node_id(name, child_name),
                "name": child_name,
                "displayName": f"executor({number})",
                "phase": phase,
            }
            nodes[child["id"]] = child
            retry["children"].append(child["id"])
            pods.append(pod_for(child))
    for attempt in pods:
        run.pod_list.append(attempt)
        run.pods[attempt["metadata"]["annotations"][NODE_ID]] = attempt
    return run
